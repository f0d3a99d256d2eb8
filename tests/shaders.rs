//! Every WGSL file parses and validates with naga (no GPU needed), and every Rust mirror of a WGSL
//! uniform struct has the offsets naga computes for it.

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
        assert!(source.starts_with(&format!("// {name}")), "{name} should open with a comment naming the file");
        assert!(source.contains("Bindings (group 0):"), "{name} should document its bindings at the top");
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
