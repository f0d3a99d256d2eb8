//! How neighbouring layers' GPU kernels share work, so that a training step takes fewer
//! dispatches and fewer trips through memory, with the same bits as the layers run one by one:
//!
//! - **A ReLU's backward is a mask** in the kernel that writes its input gradient: the layer
//!   after a ReLU output writes dx·(x > 0), which is the ReLU's dL/d(pre-activation), and the
//!   layer before skips its own pass over dy ([`GpuGrads::dy_masked`]).
//! - **An elementwise layer is absorbed** (dropout, ReLU, LeakyReLU): the layer before applies
//!   it as it stores its output (an [`Epilogue`], `shaders/epilogue.wgsl`) and the layer after
//!   writes its dx through it (a [`Mask`]), so the absorbed layer records nothing. Dropout is
//!   absorbed only after a ReLU output, where its mask can be read from its output (x > 0 where
//!   kept), so the layer after need not recompute the hash.
//!
//! Each layer says what it can do ([`GpuFusion`], [`super::HiddenLayer::gpu_fusion`]); [`plan`]
//! decides, for a whole model, which buffers each layer binds and with what mask and epilogue.
//! Both are bit-identical to the unfused kernels: a mask is a select and a product the unfused
//! chain computes too, in the same order.

use bytemuck::{Pod, Zeroable};

#[cfg(doc)]
use super::GpuGrads;

/// What a layer's GPU kernels can share with their neighbours'. All false by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GpuFusion {
    /// y = relu(pre): the backward pass starts from dy·(y > 0), and can take it ready-made
    /// ([`GpuGrads::dy_masked`]).
    pub relu_output: bool,
    /// The output is a ReLU output whenever the input is (max-pooling: each output is one of
    /// its inputs).
    pub passes_relu: bool,
    /// The kernel that writes dx can write it through a [`Mask`] ([`GpuGrads::mask_dx`]).
    pub masks_dx: bool,
    /// The forward kernels can apply an [`Epilogue`] as they store y (`shaders/epilogue.wgsl`).
    pub takes_epilogue: bool,
    /// The layer is this function of its input, element by element: it can be absorbed.
    pub elementwise: Option<Elementwise>,
}

/// An elementwise layer's function, for a neighbour's kernels to apply in its place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Elementwise {
    /// Inverted dropout: element i of step s is kept with the mask of `shaders/dropout.wgsl`
    /// (the run's seed, the layer's index) and scaled by `scale`.
    Dropout { rate: f32, scale: f32, seed: u32, layer: u32 },
    /// max(x, 0).
    Relu,
    /// x where x > 0, else slope·x, with slope ≥ 0 (so that the output's sign is the input's).
    LeakyRelu { slope: f32 },
}

impl Elementwise {
    /// The epilogue that applies it.
    pub fn epilogue(&self) -> Epilogue {
        let mut e = Epilogue::default();
        match *self {
            Elementwise::Dropout { rate, scale, seed, layer } => {
                (e.kind, e.rate, e.scale, e.seed, e.layer) = (EPILOGUE_DROPOUT, rate, scale, seed, layer);
            }
            Elementwise::Relu => e.kind = EPILOGUE_RELU,
            Elementwise::LeakyRelu { slope } => (e.kind, e.slope) = (EPILOGUE_LEAKY_RELU, slope),
        }
        e
    }

    /// The mask the layer after writes its dx through, from its input (this layer's output);
    /// for dropout, `relu_before` must hold (kept ⇔ output > 0 there).
    fn mask(&self) -> Mask {
        match *self {
            Elementwise::Dropout { scale, .. } => Mask { pos: scale, neg: 0.0 },
            Elementwise::Relu => Mask::RELU,
            Elementwise::LeakyRelu { slope } => Mask { pos: 1.0, neg: slope },
        }
    }
}

const EPILOGUE_DROPOUT: u32 = 1;
const EPILOGUE_RELU: u32 = 2;
const EPILOGUE_LEAKY_RELU: u32 = 3;

/// Mirror of `Epilogue` in `shaders/epilogue.wgsl`: what a forward kernel applies to each
/// output as it stores it. The default applies nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct Epilogue {
    /// 0 nothing, 1 dropout, 2 ReLU, 3 LeakyReLU.
    pub kind: u32,
    pub rate: f32,
    pub scale: f32,
    pub seed: u32,
    pub layer: u32,
    pub slope: f32,
    pub _pad: [u32; 2],
}

impl Epilogue {
    /// Whether it applies a dropout (which changes the sign of what it stores).
    pub fn is_dropout(&self) -> bool {
        self.kind == EPILOGUE_DROPOUT
    }
}

/// How a kernel writes dx for the layers before it: `dx·pos` where its input x > 0, else
/// `dx·neg` (exactly 0 when `neg` is 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mask {
    pub pos: f32,
    pub neg: f32,
}

impl Mask {
    /// dx as it is.
    pub const NONE: Mask = Mask { pos: 1.0, neg: 1.0 };
    /// Through the ReLU before: dx·(x > 0).
    pub const RELU: Mask = Mask { pos: 1.0, neg: 0.0 };

    pub fn is_none(&self) -> bool {
        *self == Mask::NONE
    }
}

impl Default for Mask {
    fn default() -> Self {
        Mask::NONE
    }
}

/// Where one hidden layer binds in a fused model: indices into the model's activation buffers
/// (`acts[i]` is layer i's output, `dacts[i]` its dL/dy).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// Applied by the layer before it (an epilogue) and the layer after it (a mask): it binds
    /// nothing.
    pub absorbed: bool,
    /// The activation buffer it writes: its own, or the next layer's when it applies that
    /// layer as its epilogue.
    pub y: usize,
    pub epilogue: Epilogue,
    /// The gradient buffer its dx goes to (None for the first layer): the layer before's, or
    /// the one before that when the layer between is absorbed.
    pub dx: Option<usize>,
    pub mask_dx: Mask,
    /// Its dy arrives as dL/dy·(y > 0).
    pub dy_masked: bool,
}

/// The fused bindings of a model: a [`Placement`] per hidden layer, and the head's dx buffer
/// and mask.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub hidden: Vec<Placement>,
    pub head_dx: Option<usize>,
    pub head_mask: Mask,
}

/// The bindings of hidden layers with `fusions` before a head that can mask its dx when
/// `head_masks_dx`. A layer is absorbed when it is elementwise, the layer before takes
/// epilogues and is not absorbed itself, the layer after masks its dx, and, for dropout, the
/// layer before has a ReLU output (its own or passed through), for LeakyReLU, its slope is at
/// least 0 (so that its output's sign is its input's).
pub fn plan(fusions: &[GpuFusion], head_masks_dx: bool) -> Plan {
    let n = fusions.len();
    let masks = |j: usize| if j < n { fusions[j].masks_dx } else { head_masks_dx };
    // Whether layer i's output is a ReLU output (its own, or passed through from its input).
    let mut relu_like = vec![false; n];
    let mut absorbed = vec![false; n];
    for i in 0..n {
        let f = &fusions[i];
        relu_like[i] = f.relu_output || (f.passes_relu && i > 0 && relu_like[i - 1]);
        absorbed[i] = i > 0
            && !absorbed[i - 1]
            && fusions[i - 1].takes_epilogue
            && masks(i + 1)
            && match f.elementwise {
                Some(Elementwise::Dropout { .. }) => relu_like[i - 1],
                Some(Elementwise::Relu) => true,
                Some(Elementwise::LeakyRelu { slope }) => slope >= 0.0,
                None => false,
            };
        if absorbed[i] {
            // Its output is relu-like only when a dropout keeps a ReLU output so.
            relu_like[i] =
                matches!(f.elementwise, Some(Elementwise::Dropout { .. })) || f.elementwise == Some(Elementwise::Relu);
        }
    }
    // How layer j (a hidden layer or, at n, the head) writes its dx, and where.
    let dx_of = |j: usize| -> (Option<usize>, Mask) {
        if j == 0 {
            return (None, Mask::NONE);
        }
        if absorbed[j - 1] {
            let e = fusions[j - 1].elementwise.expect("an absorbed layer is elementwise");
            return (Some(j - 2), e.mask());
        }
        let relu_before = fusions[j - 1].relu_output && masks(j);
        (Some(j - 1), if relu_before { Mask::RELU } else { Mask::NONE })
    };
    let hidden = (0..n)
        .map(|i| {
            let next_absorbed = i + 1 < n && absorbed[i + 1];
            let (dx, mask_dx) = dx_of(i);
            // The layer that writes this one's dy applies its ReLU: the next one, or the one
            // after an absorbed dropout (whose mask includes the ReLU).
            let dy_masked = if next_absorbed {
                fusions[i].relu_output && matches!(fusions[i + 1].elementwise, Some(Elementwise::Dropout { .. }))
            } else {
                fusions[i].relu_output && masks(i + 1)
            };
            Placement {
                absorbed: absorbed[i],
                y: if next_absorbed { i + 1 } else { i },
                epilogue: if next_absorbed {
                    fusions[i + 1].elementwise.map(|e| e.epilogue()).unwrap_or_default()
                } else {
                    Epilogue::default()
                },
                dx,
                mask_dx,
                dy_masked,
            }
        })
        .collect();
    let (head_dx, head_mask) = dx_of(n);
    Plan { hidden, head_dx, head_mask }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: GpuFusion =
        GpuFusion { relu_output: true, passes_relu: false, masks_dx: true, takes_epilogue: true, elementwise: None };
    const LINEAR_CONV: GpuFusion = GpuFusion { relu_output: false, ..CONV };
    const POOL: GpuFusion = GpuFusion { relu_output: false, passes_relu: true, ..CONV };
    const NORM: GpuFusion = GpuFusion { relu_output: false, masks_dx: false, ..CONV };
    const DROPOUT: GpuFusion = GpuFusion {
        relu_output: false,
        passes_relu: false,
        masks_dx: true,
        takes_epilogue: false,
        elementwise: Some(Elementwise::Dropout { rate: 0.5, scale: 2.0, seed: 1, layer: 4 }),
    };
    const LEAKY: GpuFusion = GpuFusion {
        relu_output: false,
        passes_relu: false,
        masks_dx: false,
        takes_epilogue: false,
        elementwise: Some(Elementwise::LeakyRelu { slope: 0.3 }),
    };

    #[test]
    fn the_base_net_absorbs_its_dropout_and_masks_every_relu() {
        let p = plan(&[CONV, CONV, CONV, CONV, DROPOUT], true);
        let absorbed: Vec<bool> = p.hidden.iter().map(|h| h.absorbed).collect();
        assert_eq!(absorbed, [false, false, false, false, true]);
        // conv2d_3 writes the dropout's output, with its mask.
        assert_eq!((p.hidden[3].y, p.hidden[3].epilogue.kind), (4, EPILOGUE_DROPOUT));
        assert!(p.hidden[3].dy_masked);
        // The head writes conv2d_3's dy, through the dropout's scale and the ReLU.
        assert_eq!((p.head_dx, p.head_mask), (Some(3), Mask { pos: 2.0, neg: 0.0 }));
        for i in 1..4 {
            assert_eq!((p.hidden[i].dx, p.hidden[i].mask_dx), (Some(i - 1), Mask::RELU), "layer {i}");
            assert!(p.hidden[i - 1].dy_masked);
        }
        assert_eq!(p.hidden[0].dx, None);
    }

    #[test]
    fn dropout_after_a_pool_of_relus_is_absorbed_but_not_after_a_linear_convolution() {
        let p = plan(&[CONV, POOL, DROPOUT], true);
        assert!(p.hidden[2].absorbed);
        assert_eq!((p.hidden[1].y, p.head_dx), (2, Some(1)));
        assert!(!p.hidden[1].dy_masked, "a pool has no ReLU of its own");
        let p = plan(&[LINEAR_CONV, POOL, DROPOUT], true);
        assert!(!p.hidden[2].absorbed, "the pool's output may be negative");
        let p = plan(&[LINEAR_CONV, DROPOUT], true);
        assert!(!p.hidden[1].absorbed);
        assert_eq!((p.head_dx, p.head_mask), (Some(1), Mask::NONE));
    }

    #[test]
    fn a_leaky_relu_after_batch_norm_is_absorbed_when_the_next_layer_masks() {
        // c16n, bn, lrelu, c16s2n, bn, lrelu, d0.5 (head)
        let p = plan(&[LINEAR_CONV, NORM, LEAKY, LINEAR_CONV, NORM, LEAKY, DROPOUT], true);
        let absorbed: Vec<bool> = p.hidden.iter().map(|h| h.absorbed).collect();
        // The last LeakyReLU is absorbed too (dropout masks its dx); the dropout after it is not
        // (the layer before it is absorbed).
        assert_eq!(absorbed, [false, false, true, false, false, true, false]);
        assert_eq!((p.hidden[1].y, p.hidden[1].epilogue.kind), (2, EPILOGUE_LEAKY_RELU));
        assert_eq!((p.hidden[3].dx, p.hidden[3].mask_dx), (Some(1), Mask { pos: 1.0, neg: 0.3 }));
        assert!(!p.hidden[1].dy_masked);
        assert_eq!((p.hidden[6].dx, p.hidden[6].mask_dx), (Some(4), Mask { pos: 1.0, neg: 0.3 }));
        // A layer that cannot mask keeps the LeakyReLU as a layer.
        let p = plan(&[LINEAR_CONV, NORM, LEAKY, NORM], true);
        assert!(!p.hidden[2].absorbed);
    }

    #[test]
    fn nothing_fuses_without_the_abilities() {
        let plain = GpuFusion::default();
        let p = plan(&[plain, DROPOUT, plain], false);
        assert!(p.hidden.iter().all(|h| !h.absorbed && !h.dy_masked && h.mask_dx.is_none()));
        assert_eq!((p.hidden[2].dx, p.head_dx), (Some(1), Some(2)));
        assert_eq!(plan(&[], true), Plan { hidden: vec![], head_dx: None, head_mask: Mask::NONE });
    }
}
