//! Every WGSL file parses and validates with naga (no GPU needed), every Rust mirror of a WGSL
//! uniform struct has the offsets naga computes for it, and the host sets exactly the `override`
//! constants a shader declares.

use wgpu_cnn::shaders;

fn parse(name: &str, source: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name} does not parse:\n{}", e.emit_to_string(source)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name} does not validate:\n{}", e.emit_to_string(source)));
    module
}

#[test]
fn every_shader_parses_and_validates_with_naga() {
    assert!(!shaders::ALL.is_empty());
    for (name, source) in shaders::ALL {
        parse(name, source);
    }
}

#[test]
fn every_shader_starts_with_its_bindings_and_declares_the_workgroup_size_override() {
    for (name, source) in shaders::ALL {
        let own = shaders::own_part(source);
        assert!(own.starts_with(&format!("// {name}")), "{name} should open with a comment naming the file");
        assert!(own.contains("Bindings (group 0)"), "{name} should document its bindings at the top");
        assert!(source.contains("override WORKGROUP_SIZE"), "{name} should take WORKGROUP_SIZE as an override");
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
    let module = parse("conv3x3.wgsl", shaders::CONV3X3);
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
        let module = parse($wgsl, $source);
        let (members, span) = struct_layout(&module, $wgsl);
        let rust: Vec<u32> = vec![$((std::mem::offset_of!($rust, $field) $(+ $extra)?) as u32),*];
        let wgsl: Vec<u32> = members.iter().map(|(_, offset)| *offset).collect();
        assert_eq!(wgsl, rust, "member offsets of {} ({:?})", $wgsl, members);
        assert_eq!(span as usize, std::mem::size_of::<$rust>(), "size of {}", $wgsl);
    }};
}

#[test]
fn training_uniforms_match_their_wgsl_structs() {
    use wgpu_cnn::layers::adam::AdamShape;
    use wgpu_cnn::layers::dense_softmax::DenseShape;
    use wgpu_cnn::layers::dropout::DropoutShape;
    use wgpu_cnn::layers::gather::GatherShape;
    use wgpu_cnn::layers::maxpool2d::PoolShape;
    use wgpu_cnn::layers::StepParams;
    assert_layout!(
        shaders::ADAM,
        "Step",
        StepParams,
        [batch_size, batch_start, step, training, seed, adam_alpha, penalty_slot, _pad]
    );
    assert_layout!(
        shaders::MAXPOOL2D,
        "PoolShape",
        PoolShape,
        [batch, in_h, in_w, channels, out_h, out_w, _pad, _pad + 4]
    );
    assert_layout!(
        shaders::DROPOUT,
        "DropoutShape",
        DropoutShape,
        [batch, sample_len, layer, rate, scale, _pad, _pad + 4, _pad + 8]
    );
    assert_layout!(
        shaders::DENSE_SOFTMAX,
        "DenseShape",
        DenseShape,
        [batch, features, classes, kernel_offset, bias_offset, l1, _pad, _pad + 4]
    );
    assert_layout!(shaders::ADAM, "AdamShape", AdamShape, [count, one_minus_beta1, one_minus_beta2, epsilon]);
    assert_layout!(shaders::GATHER, "GatherShape", GatherShape, [batch, sample_len, split_row, _pad]);
}

#[test]
fn conv2d_shapes_set_exactly_the_overrides_the_shader_declares() {
    use wgpu_cnn::layers::conv2d::Conv2dShape;
    let module = parse("conv2d.wgsl", shaders::CONV2D);
    let mut declared: Vec<String> =
        module.overrides.iter().filter_map(|(_, o)| o.name.clone()).filter(|name| name != "WORKGROUP_SIZE").collect();
    let mut set: Vec<String> =
        Conv2dShape::new(2, [8, 8, 4], 8, 2).constants().iter().map(|(name, _)| name.to_string()).collect();
    declared.sort();
    set.sort();
    assert_eq!(declared, set);
}
