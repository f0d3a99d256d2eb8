// conv3x3_texture_rgba8.wgsl — the output binding of conv3x3_texture.wgsl for Rgba8Unorm.
@group(0) @binding(2) var output: texture_storage_2d<rgba8unorm, write>;
