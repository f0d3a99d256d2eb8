//! The host–shader contract, checked with naga (no GPU needed): every WGSL file parses and
//! validates; every entry point's binding table on the host is exactly what naga's reflection
//! says that entry point uses (numbers, names, uniform / read / read-write); every Rust mirror of
//! a WGSL uniform struct has the offsets naga computes for it; and the host sets exactly the
//! `override` constants a shader declares.

use wgpu_cnn::kernel::{Access, Binding, Shader};
use wgpu_cnn::shaders;

fn parse(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name} does not parse:\n{}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name} does not validate:\n{}", e.emit_to_string(source)));
    (module, info)
}

fn shader(file: &str) -> &'static Shader {
    shaders::all().into_iter().find(|s| s.file == file).unwrap_or_else(|| panic!("no shader {file}"))
}

#[test]
fn every_shader_parses_and_validates_with_naga() {
    let all = shaders::all();
    assert!(all.len() >= 8, "{} shaders", all.len());
    for s in all {
        parse(s.file, s.source);
    }
}

#[test]
fn every_shader_starts_with_its_bindings_and_declares_the_workgroup_size_override() {
    for s in shaders::all() {
        assert!(s.source.ends_with(&format!("{}\n", s.own)), "{}: the source ends with the file itself", s.file);
        assert!(s.own.starts_with(&format!("// {}", s.file)), "{} should open with a comment naming the file", s.file);
        assert!(s.own.contains("Bindings (group 0)"), "{} should document its bindings at the top", s.file);
        assert!(s.source.contains("override WORKGROUP_SIZE"), "{} should take WORKGROUP_SIZE as an override", s.file);
    }
}

/// What naga says entry point `entry` of `module` uses: (number, name, access), by number.
fn reflected(module: &naga::Module, info: &naga::valid::ModuleInfo, entry: usize) -> Vec<(u32, String, Access)> {
    let function = info.get_entry_point(entry);
    let mut used: Vec<(u32, String, Access)> = module
        .global_variables
        .iter()
        .filter(|(handle, var)| var.binding.is_some() && !function[*handle].is_empty())
        .map(|(_, var)| {
            let binding = var.binding.as_ref().expect("filtered on a binding");
            assert_eq!(binding.group, 0, "every binding is in group 0");
            let access = match var.space {
                naga::AddressSpace::Uniform => Access::Uniform,
                naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => {
                    Access::ReadWrite
                }
                naga::AddressSpace::Storage { .. } => Access::Read,
                naga::AddressSpace::Handle => match module.types[var.ty].inner {
                    naga::TypeInner::Image {
                        dim: naga::ImageDimension::D2,
                        arrayed: false,
                        class: naga::ImageClass::Sampled { kind: naga::ScalarKind::Float, multi: false },
                    } => Access::Texture,
                    naga::TypeInner::Image {
                        dim: naga::ImageDimension::D2,
                        arrayed: false,
                        class: naga::ImageClass::Storage { format, access },
                    } if access == naga::StorageAccess::STORE => Access::StorageTexture(match format {
                        naga::StorageFormat::Rgba8Unorm => wgpu::TextureFormat::Rgba8Unorm,
                        naga::StorageFormat::Bgra8Unorm => wgpu::TextureFormat::Bgra8Unorm,
                        other => panic!("binding {}: storage format {other:?} has no entry here", binding.binding),
                    }),
                    ref other => panic!("binding {} is a {other:?}", binding.binding),
                },
                other => panic!("binding {} is in address space {other:?}", binding.binding),
            };
            (binding.binding, var.name.clone().unwrap_or_default(), access)
        })
        .collect();
    used.sort_by_key(|(number, ..)| *number);
    used
}

#[test]
fn every_binding_table_is_exactly_what_its_entry_point_uses() {
    let mut tables = 0;
    for s in shaders::all() {
        let (module, info) = parse(s.file, s.source);
        let entry_names: Vec<&str> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
        let table_names: Vec<&str> = s.entry_points.iter().map(|e| e.name).collect();
        let (mut a, mut b) = (entry_names.clone(), table_names.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "{}: the host has a table for every entry point and no other", s.file);
        for (index, entry) in module.entry_points.iter().enumerate() {
            let table = s.entry_point(&entry.name).unwrap();
            let mut host: Vec<(u32, String, Access)> =
                table.bindings.iter().map(|b: &Binding| (b.number, b.name.to_string(), b.access)).collect();
            host.sort_by_key(|(number, ..)| *number);
            assert_eq!(host, reflected(&module, &info, index), "{}::{}: host table vs naga", s.file, entry.name);
            tables += 1;
        }
    }
    assert!(tables >= 20, "{tables} tables checked");
}

#[test]
fn no_entry_point_binds_more_than_webgpus_default_of_8_storage_buffers() {
    for s in shaders::all() {
        for entry in s.entry_points {
            let storage =
                entry.bindings.iter().filter(|b| matches!(b.access, Access::Read | Access::ReadWrite)).count();
            assert!(storage <= 8, "{}::{} binds {storage} storage buffers", s.file, entry.name);
            let textures = entry.bindings.iter().filter(|b| matches!(b.access, Access::StorageTexture(_))).count();
            assert!(
                textures <= 4,
                "{}::{} binds {textures} storage textures (WebGPU's default is 4)",
                s.file,
                entry.name
            );
        }
    }
}

/// (member name, offset) of the WGSL struct `name`, and its size.
fn struct_layout(module: &naga::Module, name: &str) -> (Vec<(String, u32)>, u32) {
    let ty = module
        .types
        .iter()
        .find(|(_, ty)| ty.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no struct {name} in the shader"))
        .1;
    match &ty.inner {
        naga::TypeInner::Struct { members, span } => {
            (members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset)).collect(), *span)
        }
        other => panic!("{name} is not a struct: {other:?}"),
    }
}

#[test]
fn conv3x3_params_match_the_wgsl_struct_layout() {
    use std::mem::{offset_of, size_of};
    use wgpu_cnn::filter::Conv3x3Params;
    let (module, _) = parse("conv3x3.wgsl", shader("conv3x3.wgsl").source);
    let (members, span) = struct_layout(&module, "Conv3x3Params");
    let rust = [
        ("width", offset_of!(Conv3x3Params, width)),
        ("height", offset_of!(Conv3x3Params, height)),
        ("_pad0", offset_of!(Conv3x3Params, _pad)),
        ("_pad1", offset_of!(Conv3x3Params, _pad) + 4),
        ("weights", offset_of!(Conv3x3Params, weights)),
        ("weights_int", offset_of!(Conv3x3Params, weights_int)),
    ];
    let wgsl: Vec<(String, u32)> = members;
    let rust: Vec<(String, u32)> = rust.iter().map(|(n, o)| (n.to_string(), *o as u32)).collect();
    assert_eq!(wgsl, rust);
    assert_eq!(span as usize, size_of::<Conv3x3Params>());
}

/// Asserts that the Rust struct `$rust` has the member offsets and size of WGSL struct `$wgsl`
/// in `$source`, member by member in declaration order.
macro_rules! assert_layout {
    ($source:expr, $wgsl:literal, $rust:ty, [$($field:ident $(+ $extra:literal)?),* $(,)?]) => {{
        let (module, _) = parse($wgsl, $source);
        let (members, span) = struct_layout(&module, $wgsl);
        let rust: Vec<u32> = vec![$((std::mem::offset_of!($rust, $field) $(+ $extra)?) as u32),*];
        let wgsl: Vec<u32> = members.iter().map(|(_, offset)| *offset).collect();
        assert_eq!(wgsl, rust, "member offsets of {} ({:?})", $wgsl, members);
        assert_eq!(span as usize, std::mem::size_of::<$rust>(), "size of {}", $wgsl);
    }};
}

#[test]
fn training_uniforms_match_their_wgsl_structs() {
    use wgpu_cnn::adam::AdamShape;
    use wgpu_cnn::gather::DatasetShape;
    use wgpu_cnn::layers::batch_norm::NormShape;
    use wgpu_cnn::layers::dense_softmax::DenseShape;
    use wgpu_cnn::layers::dropout::DropoutShape;
    use wgpu_cnn::layers::maxpool2d::PoolShape;
    use wgpu_cnn::layers::{Epilogue, StepParams};
    assert_layout!(
        shader("adam.wgsl").source,
        "Step",
        StepParams,
        [batch_size, batch_start, step, training, adam_alpha, penalty_slot, _pad, _pad + 4]
    );
    assert_layout!(
        shader("maxpool2d.wgsl").source,
        "PoolShape",
        PoolShape,
        [batch, in_h, in_w, channels, out_h, out_w, mask_pos, mask_neg]
    );
    assert_layout!(
        shader("dropout.wgsl").source,
        "DropoutShape",
        DropoutShape,
        [batch, sample_len, layer, seed, rate, scale, mask_pos, mask_neg]
    );
    assert_layout!(
        shader("dense_softmax.wgsl").source,
        "DenseShape",
        DenseShape,
        [
            batch,
            features,
            classes,
            kernel_offset,
            bias_offset,
            l1,
            mask_pos,
            mask_neg,
            mask_rate,
            mask_scale,
            mask_seed,
            mask_layer
        ]
    );
    assert_layout!(
        shader("adam.wgsl").source,
        "DenseGradientShape",
        wgpu_cnn::layers::dense_softmax::DenseGradientShape,
        [kernel_offset, features, classes, l1]
    );
    assert_layout!(
        shader("adam.wgsl").source,
        "AdamShape",
        AdamShape,
        [count, one_minus_beta1, one_minus_beta2, epsilon]
    );
    assert_layout!(
        shader("batch_norm.wgsl").source,
        "Epilogue",
        Epilogue,
        [kind, rate, scale, seed, layer, slope, _pad, _pad + 4]
    );
    assert_layout!(
        shader("gather.wgsl").source,
        "DatasetShape",
        DatasetShape,
        [sample_words, split_row, _pad, _pad + 4]
    );
    assert_layout!(
        shader("batch_norm.wgsl").source,
        "NormShape",
        NormShape,
        [
            channels,
            pixels,
            gamma_offset,
            mean_offset,
            epsilon,
            momentum,
            one_minus_momentum,
            block_rows,
            blocks,
            workgroup_rows,
            gradient_offset
        ]
    );
}

#[test]
fn embedding_uniforms_match_their_wgsl_structs() {
    use wgpu_cnn::classify::InputShape;
    use wgpu_cnn::filter::texture::TextureConvParams;
    assert_layout!(
        shader("conv3x3_texture.wgsl").source,
        "TextureConvParams",
        TextureConvParams,
        [weights, weights_int, channel, exact, _pad, _pad + 4]
    );
    assert_layout!(shader("classify_input.wgsl").source, "InputShape", InputShape, [first, height, width, channels]);
}

#[test]
fn conv2d_shapes_set_exactly_the_overrides_the_shaders_declare() {
    use wgpu_cnn::layers::conv2d::Conv2dShape;
    // Both tiled variants (reading x from a buffer or from the dataset) and the naive kernels.
    for s in shaders::all().into_iter().filter(|s| s.file.starts_with("conv2d_")) {
        let file = s.name;
        let (module, _) = parse(file, s.source);
        let mut declared: Vec<String> = module
            .overrides
            .iter()
            .filter_map(|(_, o)| o.name.clone())
            .filter(|name| name != "WORKGROUP_SIZE")
            .collect();
        let mut set: Vec<String> =
            Conv2dShape::new(2, [8, 8, 4], 8, 2).constants().iter().map(|(name, _)| name.to_string()).collect();
        if s.source.contains("// dataset.wgsl") {
            set.extend(wgpu_cnn::gather::OVERRIDES.map(String::from));
        }
        declared.sort();
        set.sort();
        assert_eq!(declared, set, "{file}");
    }
}

#[test]
fn batch_norm_s_kernels_have_the_lanes_its_rust_side_sizes_them_by() {
    use wgpu_cnn::layers::batch_norm::{SHADER, STAT_LANES};
    use wgpu_cnn::shaders::{manifest, WorkgroupDimension};
    let manifest = manifest().unwrap();
    let shader = manifest.iter().find(|s| s.name == SHADER.name).unwrap();
    for entry in &shader.entry_points {
        assert_eq!(entry.workgroup_size[0], WorkgroupDimension::Fixed(STAT_LANES as u32), "{}", entry.name);
    }
}

#[test]
fn the_manifest_gives_every_shader_with_its_workgroup_sizes_bindings_and_overrides() {
    use wgpu_cnn::shaders::{manifest, WorkgroupDimension};
    let manifest = manifest().unwrap();
    assert_eq!(manifest.len(), shaders::all().len());
    let mut names: Vec<&str> = manifest.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), manifest.len(), "shader names are unique: {names:?}");
    let find = |name: &str| manifest.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name}"));
    for s in &manifest {
        let table = shaders::all().into_iter().find(|t| t.name == s.name).unwrap();
        assert_eq!(s.entry_points.len(), table.entry_points.len(), "{}", s.name);
        let size = s.overrides.iter().find(|o| o.name == "WORKGROUP_SIZE").unwrap_or_else(|| panic!("{}", s.name));
        assert_eq!((size.ty.as_str(), size.default), ("u32", Some(256.0)), "{}", s.name);
    }
    let conv = find("conv3x3");
    assert_eq!(
        conv.entry_points[0].workgroup_size,
        [
            WorkgroupDimension::Override("WORKGROUP_SIZE".into()),
            WorkgroupDimension::Fixed(1),
            WorkgroupDimension::Fixed(1)
        ]
    );
    let kinds: Vec<&str> = conv.entry_points[0].bindings.iter().map(|b| b.kind.as_str()).collect();
    assert_eq!(kinds, ["uniform", "read-only-storage", "storage"]);
    let texture = find("conv3x3_texture_bgra8");
    let output = &texture.entry_points[0].bindings[2];
    assert_eq!((output.kind.as_str(), output.format.as_deref()), ("write-only-storage-texture", Some("Bgra8Unorm")));
    assert!(texture.source.contains("bgra8unorm"));
    // The convolution's shape is set by the host: overrides without defaults.
    let tiled = find("conv2d_tiled");
    let batch = tiled.overrides.iter().find(|o| o.name == "BATCH").unwrap();
    assert_eq!((batch.ty.as_str(), batch.default), ("u32", None));
    // A size fixed by a WGSL `const` is a number (the head's 64 lanes per sample).
    let softmax = find("dense_softmax");
    let forward = softmax.entry_points.iter().find(|e| e.name == "forward").unwrap();
    assert_eq!(forward.workgroup_size[0], WorkgroupDimension::Fixed(64));
}
