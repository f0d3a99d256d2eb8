//! Where to run: the choice between the GPU and the two CPU engines, and the fallback from a
//! software adapter to the fast CPU engine, in one place for every front end.

use super::gpu::{GpuEngine, GpuInference};
use super::reference::ReferenceEngine;
use super::{Engine, Inference, TrainConfig};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::model::{Model, Weights};

/// What the user asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// A hardware GPU when there is one, else the fast CPU engine.
    #[default]
    Auto,
    /// The selected adapter, software ones included.
    Gpu,
    /// The fast CPU engine (the reference where the crate is built without `fast-cpu`).
    Cpu,
    /// The plain-loop CPU reference (the oracle the others are tested against).
    CpuReference,
}

/// Where a model runs: the GPU, or one of the two CPU engines.
pub enum Target {
    Gpu(Box<GpuContext>),
    CpuFast,
    CpuReference,
}

impl Target {
    /// The target `device` asks for, and why (for the user). `Auto` takes a hardware adapter; a
    /// software one (llvmpipe, WARP, SwiftShader) only when `software_ok` — for the 3×3 filter it
    /// is fine, but it trains slower than the CPU engine (≈0.4 GFLOP/s for a naive f32 kernel on
    /// lavapipe), so training falls back to the CPU instead, as it does without any adapter.
    pub fn choose(device: Device, options: &GpuOptions, software_ok: bool) -> Result<(Target, String)> {
        let cpu = if cfg!(feature = "fast-cpu") { Target::CpuFast } else { Target::CpuReference };
        match device {
            Device::CpuReference => Ok((Target::CpuReference, "CPU reference (plain loops)".to_string())),
            Device::Cpu => Ok((cpu, "CPU".to_string())),
            Device::Gpu => {
                let ctx = GpuContext::new(options)?;
                let why = format!("GPU {}", ctx.describe());
                Ok((Target::Gpu(Box::new(ctx)), why))
            }
            Device::Auto => match GpuContext::new(options) {
                Ok(ctx) if software_ok || !ctx.is_software() => {
                    let why = format!("GPU {}", ctx.describe());
                    Ok((Target::Gpu(Box::new(ctx)), why))
                }
                Ok(ctx) => Ok((
                    cpu,
                    format!(
                        "CPU: the only adapter, {}, is a software rasteriser that trains slower than the CPU \
                         engine (ask for the GPU device to run the shaders on it anyway)",
                        ctx.describe()
                    ),
                )),
                Err(e @ Error::NoAdapter { .. }) => {
                    Ok((cpu, format!("CPU: no GPU adapter ({})", e.to_string().lines().next().unwrap_or_default())))
                }
                Err(e) => Err(e),
            },
        }
    }

    pub fn gpu(&self) -> Option<&GpuContext> {
        match self {
            Target::Gpu(ctx) => Some(ctx),
            _ => None,
        }
    }

    /// An engine training `model` from `weights` on `train` here.
    pub fn engine(
        &self,
        model: &Model,
        train: &Dataset,
        weights: Weights,
        config: &TrainConfig,
    ) -> Result<Box<dyn Engine>> {
        Ok(match self {
            Target::Gpu(ctx) => Box::new(GpuEngine::new(ctx, model, train, &weights, config)?),
            #[cfg(feature = "fast-cpu")]
            Target::CpuFast => Box::new(super::fast::FastCpuEngine::new(model, train, weights, config)?),
            #[cfg(not(feature = "fast-cpu"))]
            Target::CpuFast => Box::new(ReferenceEngine::new(model, train, weights, config)?),
            Target::CpuReference => Box::new(ReferenceEngine::new(model, train, weights, config)?),
        })
    }

    /// Forward passes of `model` with `weights` here, in batches of `config.batch_size` (the
    /// GPU binds no gradient buffers).
    pub fn inference(&self, model: &Model, weights: Weights, config: &TrainConfig) -> Result<Box<dyn Inference>> {
        match self {
            Target::Gpu(ctx) => Ok(Box::new(GpuInference::new(ctx, model, &weights, config)?)),
            _ => {
                let engine: Box<dyn Inference> = self.engine(model, &Dataset::default(), weights, config)?;
                Ok(engine)
            }
        }
    }
}
