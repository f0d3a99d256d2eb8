// conv3x3_texture_bgra8.wgsl — the output binding of conv3x3_texture.wgsl for Bgra8Unorm (needs
// the adapter's BGRA8UNORM_STORAGE feature).
@group(0) @binding(2) var output: texture_storage_2d<bgra8unorm, write>;
