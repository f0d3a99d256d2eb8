//! Every WGSL source the crate compiles, with its binding tables: each [`Shader`] lives beside the
//! code that binds it (a layer's in its module), and [`all`] lists them for the validation tests
//! and for other wgpu programs that build their own pipelines from them. Each file in `shaders/`
//! starts with its bindings and buffer layout.
//!
//! The training shaders are compiled after `shaders/common.wgsl` (the per-step uniform, the grid
//! index and the hash shared with [`crate::rng`]), so those facts are written once; the
//! convolution's also after `shaders/conv2d_shape.wgsl` (its shape as override constants).

use crate::kernel::Shader;
use crate::layers::REGISTRY;

/// The prelude of every training shader.
pub const COMMON: &str = crate::shader_own!("common.wgsl");

/// Every shader: Part I's (buffers and textures), each layer kind's (from the registry), Adam's,
/// the partial sums', the gather's, the classifier's input and the device probe's.
pub fn all() -> Vec<&'static Shader> {
    let mut all =
        vec![&crate::filter::SHADER, &crate::filter::texture::SHADER_RGBA8, &crate::filter::texture::SHADER_BGRA8];
    for kind in REGISTRY {
        all.extend(kind.shaders.iter().copied());
    }
    all.extend([&crate::adam::SHADER, &crate::partial_sums::SHADER, &crate::gather::SHADER, &crate::classify::SHADER]);
    all.push(&crate::bench::PROBE);
    all
}

/// One shader as data, for programs that bind our WGSL without our Rust types (as vello_shaders
/// exports its shaders): the source as compiled, and per entry point its workgroup size and
/// binding table; the override constants the pipelines may set.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ShaderManifest {
    pub name: String,
    pub file: String,
    pub source: String,
    pub entry_points: Vec<EntryManifest>,
    pub overrides: Vec<OverrideManifest>,
}

/// An entry point: its workgroup size (each dimension a number or the name of the override that
/// sets it) and exactly the bindings it uses, all in group 0.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EntryManifest {
    pub name: String,
    pub workgroup_size: [WorkgroupDimension; 3],
    pub bindings: Vec<BindingManifest>,
}

/// One dimension of a workgroup size.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(untagged))]
pub enum WorkgroupDimension {
    Fixed(u32),
    /// Set by this override constant ([`OverrideManifest`] gives its default).
    Override(String),
}

/// One binding: its number, its name in the WGSL, and what it is, in WebGPU's words
/// (`uniform`, `read-only-storage`, `storage`, `texture` (unfilterable float, 2-D),
/// `write-only-storage-texture` with its `format`).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BindingManifest {
    pub binding: u32,
    pub name: String,
    pub kind: String,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub format: Option<String>,
}

/// An `override` constant: its name, WGSL type and default (none: the host must set it).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OverrideManifest {
    pub name: String,
    pub ty: String,
    pub default: Option<f64>,
}

/// Every shader of [`all`] as data. The binding tables are the host's (checked against the WGSL
/// by the tests); workgroup sizes and override constants are read from the WGSL with naga.
#[cfg(not(target_arch = "wasm32"))]
pub fn manifest() -> crate::Result<Vec<ShaderManifest>> {
    all().into_iter().map(shader_manifest).collect()
}

#[cfg(not(target_arch = "wasm32"))]
fn shader_manifest(shader: &'static Shader) -> crate::Result<ShaderManifest> {
    use crate::kernel::Access;
    let module = naga::front::wgsl::parse_str(shader.source)
        .map_err(|e| crate::Error::invalid(format!("{}: {}", shader.file, e.emit_to_string(shader.source))))?;
    let override_name = |expression: naga::Handle<naga::Expression>| match module.global_expressions[expression] {
        naga::Expression::Override(o) => module.overrides[o].name.clone().unwrap_or_default(),
        ref other => format!("{other:?}"),
    };
    let entry_points = shader
        .entry_points
        .iter()
        .map(|table| {
            let entry =
                module.entry_points.iter().find(|e| e.name == table.name).ok_or_else(|| {
                    crate::Error::invalid(format!("{} has no entry point {}", shader.file, table.name))
                })?;
            let workgroup_size =
                std::array::from_fn(|d| match entry.workgroup_size_overrides.as_ref().and_then(|o| o[d]) {
                    Some(expression) => WorkgroupDimension::Override(override_name(expression)),
                    None => WorkgroupDimension::Fixed(entry.workgroup_size[d]),
                });
            // In binding order, however the table lists them (an extended table lists its own last).
            let mut sorted = table.bindings.to_vec();
            sorted.sort_by_key(|b| b.number);
            let bindings = sorted
                .iter()
                .map(|b| {
                    let (kind, format) = match b.access {
                        Access::Uniform => ("uniform", None),
                        Access::Read => ("read-only-storage", None),
                        Access::ReadWrite => ("storage", None),
                        Access::Texture => ("texture", None),
                        Access::StorageTexture(format) => ("write-only-storage-texture", Some(format!("{format:?}"))),
                    };
                    BindingManifest { binding: b.number, name: b.name.into(), kind: kind.into(), format }
                })
                .collect();
            Ok(EntryManifest { name: table.name.into(), workgroup_size, bindings })
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let overrides = module
        .overrides
        .iter()
        .map(|(_, o)| {
            let ty = match &module.types[o.ty].inner {
                naga::TypeInner::Scalar(scalar) => match (scalar.kind, scalar.width) {
                    (naga::ScalarKind::Uint, 4) => "u32",
                    (naga::ScalarKind::Sint, 4) => "i32",
                    (naga::ScalarKind::Float, 4) => "f32",
                    (naga::ScalarKind::Bool, _) => "bool",
                    _ => "other",
                },
                _ => "other",
            };
            let default = o.init.and_then(|init| match module.global_expressions[init] {
                naga::Expression::Literal(naga::Literal::U32(v)) => Some(f64::from(v)),
                naga::Expression::Literal(naga::Literal::I32(v)) => Some(f64::from(v)),
                naga::Expression::Literal(naga::Literal::F32(v)) => Some(f64::from(v)),
                naga::Expression::Literal(naga::Literal::Bool(v)) => Some(f64::from(u8::from(v))),
                _ => None,
            });
            OverrideManifest { name: o.name.clone().unwrap_or_default(), ty: ty.into(), default }
        })
        .collect();
    Ok(ShaderManifest {
        name: shader.name.into(),
        file: shader.file.into(),
        source: shader.source.into(),
        entry_points,
        overrides,
    })
}
