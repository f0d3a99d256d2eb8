//! How neighbouring layers' GPU kernels share work, so that a training step takes fewer
//! dispatches and fewer trips through memory, with the same bits as the layers run one by one:
//!
//! - **A ReLU's backward is a mask** in the kernel that writes its input gradient: the layer
//!   after a ReLU output writes dx·(x > 0), which is the ReLU's dL/d(pre-activation), and the
//!   layer before skips its own pass over dy ([`GpuGrads::dy_masked`]).
//! - **An elementwise layer is absorbed** (dropout, ReLU, LeakyReLU): the layer before applies
//!   it as it stores its output (an [`Epilogue`], `shaders/epilogue.wgsl`) and the layer after
//!   writes its dx through it (a [`Mask`]), so the absorbed layer records nothing. Dropout is
//!   absorbed after a ReLU output, where its mask can be read from its output (x > 0 where
//!   kept), so the layer after need not recompute the hash.
//! - **Two in a row are absorbed together:** a dropout after an absorbed ReLU or LeakyReLU joins
//!   it in the same epilogue (activation, then dropout). After a LeakyReLU the sign of the
//!   output cannot tell a dropped element from a kept zero, so the layer after must recompute
//!   the dropout's keep mask as it writes dx ([`GpuFusion::masks_dropout`], [`Mask::dropout`]).
//! - **A max-pool's forward pass is the convolution's before it:** the convolution computes
//!   each 2×2 window's four pixels in one invocation and stores their maximum beside y
//!   ([`GpuFusion::pools_output`], [`Placement::pooled`]), with the layers the pool absorbed as
//!   its epilogue. The pool's backward pass still runs, recomputing the arg-max from y.
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
    /// Its dx mask can start with a dropout's keep mask, the hash recomputed ([`Mask::dropout`]).
    pub masks_dropout: bool,
    /// The forward kernels can apply an [`Epilogue`] as they store y (`shaders/epilogue.wgsl`).
    pub takes_epilogue: bool,
    /// The layer is this function of its input, element by element: it can be absorbed.
    pub elementwise: Option<Elementwise>,
    /// As a net's first layer, its tiled kernels can read the batch from the dataset themselves
    /// ([`GpuLayer::source`](super::GpuLayer::source)), in place of the gather's dispatch and the
    /// f32 batch it writes.
    pub reads_dataset: bool,
    /// Its forward kernels can also store the 2×2 max-pool of their output
    /// ([`GpuLayer::pooled`](super::GpuLayer::pooled)), taking the forward pass of a max-pool
    /// after it; but not while reading the dataset, nor with the naive kernels.
    pub pools_output: bool,
    /// A 2×2 max-pool, whose forward pass a layer before it with
    /// [`GpuFusion::pools_output`] can take.
    pub max_pool: bool,
}

/// Inverted dropout's keep mask: element i of step s is kept with the mask of
/// `shaders/dropout.wgsl` (the run's seed, the layer's index) and scaled by `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keep {
    pub rate: f32,
    pub scale: f32,
    pub seed: u32,
    pub layer: u32,
}

/// An elementwise layer's function, for a neighbour's kernels to apply in its place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Elementwise {
    Dropout(Keep),
    /// max(x, 0).
    Relu,
    /// x where x > 0, else slope·x, with slope ≥ 0 (so that the output's sign is the input's).
    LeakyRelu {
        slope: f32,
    },
}

impl Elementwise {
    /// The epilogue that applies it.
    pub fn epilogue(&self) -> Epilogue {
        Epilogue::default().then(*self).expect("any one elementwise layer is an epilogue")
    }

    /// The mask the layer after writes its dx through, from its input (this layer's output);
    /// for dropout, the layer before must have a ReLU output (kept ⇔ output > 0 there).
    fn mask(&self) -> Mask {
        match *self {
            Elementwise::Dropout(keep) => Mask { pos: keep.scale, neg: 0.0, dropout: None },
            Elementwise::Relu => Mask::RELU,
            Elementwise::LeakyRelu { slope } => Mask { pos: 1.0, neg: slope, dropout: None },
        }
    }

    /// The mask through `self` and then a dropout after it, both absorbed (`self` a ReLU or a
    /// LeakyReLU): after a ReLU the output's sign still tells where it was kept, after a
    /// LeakyReLU the keep mask is recomputed.
    fn mask_then(&self, keep: Keep) -> Mask {
        match *self {
            Elementwise::Relu => Mask { pos: keep.scale, neg: 0.0, dropout: None },
            _ => Mask { dropout: Some(keep), ..self.mask() },
        }
    }
}

// Epilogue kinds: an activation in the low bits, a dropout after it in bit 2.
const EPILOGUE_RELU: u32 = 1;
const EPILOGUE_LEAKY_RELU: u32 = 2;
const EPILOGUE_DROPOUT: u32 = 4;

/// Mirror of `Epilogue` in `shaders/epilogue.wgsl`: what a forward kernel applies to each
/// output as it stores it: an activation, then a dropout. The default applies nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct Epilogue {
    /// An activation (0 none, 1 ReLU, 2 LeakyReLU), plus 4 for a dropout after it.
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
        self.kind & EPILOGUE_DROPOUT != 0
    }

    /// This epilogue, then `next`: an activation after nothing, or a dropout after nothing or
    /// an activation (what the shader applies, in that order); None for any other order, which
    /// [`plan`] never asks for.
    pub fn then(mut self, next: Elementwise) -> Option<Epilogue> {
        if self.is_dropout() {
            return None;
        }
        match next {
            Elementwise::Dropout(Keep { rate, scale, seed, layer }) => {
                self.kind |= EPILOGUE_DROPOUT;
                (self.rate, self.scale, self.seed, self.layer) = (rate, scale, seed, layer);
            }
            Elementwise::Relu | Elementwise::LeakyRelu { .. } if self.kind != 0 => return None,
            Elementwise::Relu => self.kind = EPILOGUE_RELU,
            Elementwise::LeakyRelu { slope } => (self.kind, self.slope) = (EPILOGUE_LEAKY_RELU, slope),
        }
        Some(self)
    }
}

/// How a kernel writes dx for the layers before it: `dx·pos` where its input x > 0, else
/// `dx·neg` (exactly 0 when `neg` is 0); with `dropout`, dx is first multiplied by that
/// dropout's factor at the element (only given to a layer whose [`GpuFusion::masks_dropout`]
/// is set).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mask {
    pub pos: f32,
    pub neg: f32,
    pub dropout: Option<Keep>,
}

impl Mask {
    /// dx as it is.
    pub const NONE: Mask = Mask { pos: 1.0, neg: 1.0, dropout: None };
    /// Through the ReLU before: dx·(x > 0).
    pub const RELU: Mask = Mask { pos: 1.0, neg: 0.0, dropout: None };

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
    /// The activation buffer it also writes the 2×2 max-pool of its output to, taking the
    /// forward pass of the max-pool after it; its epilogue is then the pool's.
    pub pooled: Option<usize>,
    /// A max-pool whose forward pass the layer before takes: it binds its backward pass alone.
    pub forward_by_before: bool,
}

/// The fused bindings of a model: a [`Placement`] per hidden layer, and the head's dx buffer
/// and mask.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub hidden: Vec<Placement>,
    pub head_dx: Option<usize>,
    pub head_mask: Mask,
}

/// The bindings of hidden layers with `fusions` before a head with `head`'s (of which only
/// `masks_dx` and `masks_dropout` are read). A layer is absorbed when it is elementwise, the
/// layer before takes epilogues and is not absorbed itself, the layer after masks its dx, and,
/// for dropout, the layer before has a ReLU output (its own or passed through), for LeakyReLU,
/// its slope is at least 0 (so that its output's sign is its input's). A dropout is also
/// absorbed after an absorbed ReLU or LeakyReLU (into the same epilogue) when the layer that
/// took them has no ReLU of its own and the layer after masks its dx, after a LeakyReLU with
/// the keep mask recomputed. A max-pool right after a layer that can pool its output gives
/// that layer its forward pass.
pub fn plan(fusions: &[GpuFusion], head: GpuFusion) -> Plan {
    let n = fusions.len();
    let after = |j: usize| if j < n { fusions[j] } else { head };
    // Whether layer i's output is a ReLU output (its own, or passed through from its input).
    let mut relu_like = vec![false; n];
    let mut absorbed = vec![false; n];
    // Absorbed as the second of two in one epilogue.
    let mut second = vec![false; n];
    for i in 0..n {
        let f = &fusions[i];
        relu_like[i] = f.relu_output || (f.passes_relu && i > 0 && relu_like[i - 1]);
        let masks = after(i + 1).masks_dx;
        let alone = i > 0
            && !absorbed[i - 1]
            && fusions[i - 1].takes_epilogue
            && masks
            && match f.elementwise {
                Some(Elementwise::Dropout(_)) => relu_like[i - 1],
                Some(Elementwise::Relu) => true,
                Some(Elementwise::LeakyRelu { slope }) => slope >= 0.0,
                None => false,
            };
        second[i] = !alone
            && i > 1
            && absorbed[i - 1]
            && !fusions[i - 2].relu_output
            && masks
            && match (fusions[i - 1].elementwise, f.elementwise) {
                (Some(Elementwise::Relu), Some(Elementwise::Dropout(_))) => true,
                (Some(Elementwise::LeakyRelu { .. }), Some(Elementwise::Dropout(_))) => after(i + 1).masks_dropout,
                _ => false,
            };
        absorbed[i] = alone || second[i];
        if absorbed[i] {
            // A dropout keeps its input's sign; a ReLU's output is relu-like, a LeakyReLU's not.
            relu_like[i] = match f.elementwise {
                Some(Elementwise::Dropout(_)) => relu_like[i - 1],
                e => e == Some(Elementwise::Relu),
            };
        }
    }
    let elementwise = |i: usize| fusions[i].elementwise.expect("an absorbed layer is elementwise");
    // How layer j (a hidden layer or, at n, the head) writes its dx, and where.
    let dx_of = |j: usize| -> (Option<usize>, Mask) {
        if j == 0 {
            return (None, Mask::NONE);
        }
        if second[j - 1] {
            let Elementwise::Dropout(keep) = elementwise(j - 1) else { unreachable!("the second is a dropout") };
            return (Some(j - 3), elementwise(j - 2).mask_then(keep));
        }
        if absorbed[j - 1] {
            return (Some(j - 2), elementwise(j - 1).mask());
        }
        let relu_before = fusions[j - 1].relu_output && after(j).masks_dx;
        (Some(j - 1), if relu_before { Mask::RELU } else { Mask::NONE })
    };
    let mut hidden: Vec<Placement> = (0..n)
        .map(|i| {
            // The layers this one absorbs: none, the next, or the next two.
            let absorbs = (i + 1..n).take(2).take_while(|&j| absorbed[j] && (j == i + 1 || second[j])).count();
            let (dx, mask_dx) = dx_of(i);
            // The layer that writes this one's dy applies its ReLU: the next one, or the one
            // after an absorbed dropout (whose mask includes the ReLU). A layer that absorbs two
            // has no ReLU of its own.
            let dy_masked = match absorbs {
                0 => fusions[i].relu_output && after(i + 1).masks_dx,
                _ => fusions[i].relu_output && matches!(fusions[i + 1].elementwise, Some(Elementwise::Dropout(_))),
            };
            let epilogue = (i + 1..i + 1 + absorbs).fold(Epilogue::default(), |e, j| {
                e.then(elementwise(j)).expect("the plan absorbs an activation, then a dropout")
            });
            Placement {
                absorbed: absorbed[i],
                y: i + absorbs,
                epilogue,
                dx,
                mask_dx,
                dy_masked,
                pooled: None,
                forward_by_before: false,
            }
        })
        .collect();
    // A max-pool is never absorbed, so the layer before it absorbs nothing and has no epilogue
    // of its own: it can take the pool's.
    for i in 1..n {
        if fusions[i].max_pool && fusions[i - 1].pools_output && !absorbed[i - 1] {
            let pool = hidden[i];
            hidden[i - 1].pooled = Some(pool.y);
            hidden[i - 1].epilogue = pool.epilogue;
            hidden[i].forward_by_before = true;
        }
    }
    let (head_dx, head_mask) = dx_of(n);
    Plan { hidden, head_dx, head_mask }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: GpuFusion = GpuFusion {
        relu_output: true,
        passes_relu: false,
        masks_dx: true,
        masks_dropout: false,
        takes_epilogue: true,
        elementwise: None,
        reads_dataset: true,
        pools_output: true,
        max_pool: false,
    };
    const LINEAR_CONV: GpuFusion = GpuFusion { relu_output: false, ..CONV };
    const POOL: GpuFusion = GpuFusion {
        relu_output: false,
        passes_relu: true,
        reads_dataset: false,
        pools_output: false,
        max_pool: true,
        ..CONV
    };
    const NORM: GpuFusion =
        GpuFusion { relu_output: false, masks_dx: false, reads_dataset: false, pools_output: false, ..CONV };
    const KEEP: Keep = Keep { rate: 0.5, scale: 2.0, seed: 1, layer: 4 };
    const DROPOUT: GpuFusion = GpuFusion {
        relu_output: false,
        passes_relu: false,
        masks_dx: true,
        masks_dropout: false,
        takes_epilogue: false,
        elementwise: Some(Elementwise::Dropout(KEEP)),
        reads_dataset: false,
        pools_output: false,
        max_pool: false,
    };
    const LEAKY: GpuFusion =
        GpuFusion { masks_dx: false, elementwise: Some(Elementwise::LeakyRelu { slope: 0.3 }), ..DROPOUT };
    const RELU: GpuFusion = GpuFusion { elementwise: Some(Elementwise::Relu), ..LEAKY };
    /// A head that masks its dx, with a dropout's keep mask too (the dense head's).
    const HEAD: GpuFusion = GpuFusion {
        relu_output: false,
        passes_relu: false,
        masks_dx: true,
        masks_dropout: true,
        takes_epilogue: false,
        elementwise: None,
        reads_dataset: false,
        pools_output: false,
        max_pool: false,
    };
    const HEAD_NO_KEEP: GpuFusion = GpuFusion { masks_dropout: false, ..HEAD };

    fn absorbed(p: &Plan) -> Vec<bool> {
        p.hidden.iter().map(|h| h.absorbed).collect()
    }

    #[test]
    fn the_base_net_absorbs_its_dropout_and_masks_every_relu() {
        let p = plan(&[CONV, CONV, CONV, CONV, DROPOUT], HEAD);
        assert_eq!(absorbed(&p), [false, false, false, false, true]);
        // conv2d_3 writes the dropout's output, with its mask.
        assert_eq!((p.hidden[3].y, p.hidden[3].epilogue.kind), (4, EPILOGUE_DROPOUT));
        assert!(p.hidden[3].dy_masked);
        // The head writes conv2d_3's dy, through the dropout's scale and the ReLU.
        assert_eq!((p.head_dx, p.head_mask), (Some(3), Mask { pos: 2.0, neg: 0.0, dropout: None }));
        for i in 1..4 {
            assert_eq!((p.hidden[i].dx, p.hidden[i].mask_dx), (Some(i - 1), Mask::RELU), "layer {i}");
            assert!(p.hidden[i - 1].dy_masked);
        }
        assert_eq!(p.hidden[0].dx, None);
    }

    #[test]
    fn dropout_after_a_pool_of_relus_is_absorbed_but_not_after_a_linear_convolution() {
        let p = plan(&[CONV, POOL, DROPOUT], HEAD);
        assert!(p.hidden[2].absorbed);
        assert_eq!((p.hidden[1].y, p.head_dx), (2, Some(1)));
        assert!(!p.hidden[1].dy_masked, "a pool has no ReLU of its own");
        let p = plan(&[LINEAR_CONV, POOL, DROPOUT], HEAD);
        assert!(!p.hidden[2].absorbed, "the pool's output may be negative");
        let p = plan(&[LINEAR_CONV, DROPOUT], HEAD);
        assert!(!p.hidden[1].absorbed);
        assert_eq!((p.head_dx, p.head_mask), (Some(1), Mask::NONE));
    }

    #[test]
    fn a_convolution_takes_the_forward_pass_of_the_max_pool_after_it_with_its_epilogue() {
        // The maxpool net: c16, c16, p, c32, c32, p, d0.5 before the head.
        let p = plan(&[CONV, CONV, POOL, CONV, CONV, POOL, DROPOUT], HEAD);
        assert_eq!(absorbed(&p), [false, false, false, false, false, false, true]);
        let pooled: Vec<_> = p.hidden.iter().map(|h| (h.pooled, h.forward_by_before)).collect();
        assert_eq!(
            pooled,
            [
                (None, false),
                (Some(2), false),
                (None, true),
                (None, false),
                (Some(6), false),
                (None, true),
                (None, false)
            ]
        );
        // The second pool's epilogue (its dropout) moves to the convolution; y is its own.
        assert_eq!((p.hidden[4].y, p.hidden[4].epilogue.kind), (4, EPILOGUE_DROPOUT));
        assert_eq!(p.hidden[1].epilogue, Epilogue::default());
        // Its backward is as before: the pool writes the convolution's dy through the ReLU.
        assert_eq!((p.hidden[5].dx, p.hidden[5].mask_dx), (Some(4), Mask::RELU));
        assert!(p.hidden[4].dy_masked);
        // Not after a layer that cannot pool, nor after an absorbed layer's neighbour.
        let p = plan(&[CONV, POOL, POOL], HEAD);
        assert_eq!(p.hidden.iter().map(|h| h.forward_by_before).collect::<Vec<_>>(), [false, true, false]);
        let p = plan(&[LINEAR_CONV, RELU, POOL], HEAD);
        assert!(p.hidden[1].absorbed && !p.hidden[2].forward_by_before && p.hidden[0].pooled.is_none());
        let p = plan(&[GpuFusion { pools_output: false, ..CONV }, POOL], HEAD);
        assert!(!p.hidden[1].forward_by_before);
    }

    #[test]
    fn a_leaky_relu_after_batch_norm_is_absorbed_when_the_next_layer_masks() {
        // c16n, bn, lrelu, c16s2n, bn, lrelu, d0.5 (head, without the keep mask)
        let p = plan(&[LINEAR_CONV, NORM, LEAKY, LINEAR_CONV, NORM, LEAKY, DROPOUT], HEAD_NO_KEEP);
        // The last LeakyReLU is absorbed too (dropout masks its dx); the dropout after it is not
        // (the head cannot recompute its keep mask).
        assert_eq!(absorbed(&p), [false, false, true, false, false, true, false]);
        assert_eq!((p.hidden[1].y, p.hidden[1].epilogue.kind), (2, EPILOGUE_LEAKY_RELU));
        let leaky = Mask { pos: 1.0, neg: 0.3, dropout: None };
        assert_eq!((p.hidden[3].dx, p.hidden[3].mask_dx), (Some(1), leaky));
        assert!(!p.hidden[1].dy_masked);
        assert_eq!((p.hidden[6].dx, p.hidden[6].mask_dx), (Some(4), leaky));
        // A layer that cannot mask keeps the LeakyReLU as a layer.
        let p = plan(&[LINEAR_CONV, NORM, LEAKY, NORM], HEAD);
        assert!(!p.hidden[2].absorbed);
    }

    #[test]
    fn a_dropout_after_an_absorbed_activation_joins_its_epilogue() {
        // cifar_bn's end: bn, lrelu, d0.5 before a head that recomputes the keep mask.
        let p = plan(&[LINEAR_CONV, NORM, LEAKY, DROPOUT], HEAD);
        assert_eq!(absorbed(&p), [false, false, true, true]);
        let norm = &p.hidden[1];
        assert_eq!((norm.y, norm.epilogue.kind), (3, EPILOGUE_LEAKY_RELU | EPILOGUE_DROPOUT));
        assert_eq!((norm.epilogue.slope, norm.epilogue.rate, norm.epilogue.layer), (0.3, 0.5, 4));
        assert!(!norm.dy_masked);
        assert_eq!((p.head_dx, p.head_mask), (Some(1), Mask { pos: 1.0, neg: 0.3, dropout: Some(KEEP) }));
        // After a ReLU the output's sign tells where it was kept: no keep mask needed.
        let p = plan(&[LINEAR_CONV, RELU, DROPOUT, LINEAR_CONV], HEAD);
        assert_eq!(absorbed(&p), [false, true, true, false]);
        assert_eq!((p.hidden[0].y, p.hidden[0].epilogue.kind), (2, EPILOGUE_RELU | EPILOGUE_DROPOUT));
        assert_eq!((p.hidden[3].dx, p.hidden[3].mask_dx), (Some(0), Mask { pos: 2.0, neg: 0.0, dropout: None }));
        // Not after a layer with a ReLU of its own, nor before a layer that cannot mask.
        assert_eq!(absorbed(&plan(&[CONV, RELU, DROPOUT], HEAD)), [false, true, false]);
        assert_eq!(absorbed(&plan(&[LINEAR_CONV, RELU, DROPOUT, NORM], HEAD)), [false, true, false, false]);
        // Never three: a second dropout stays.
        assert_eq!(absorbed(&plan(&[LINEAR_CONV, RELU, DROPOUT, DROPOUT], HEAD)), [false, true, true, false]);
    }

    #[test]
    fn epilogues_chain_an_activation_then_a_dropout() {
        let e = Elementwise::LeakyRelu { slope: 0.3 }.epilogue().then(Elementwise::Dropout(KEEP)).unwrap();
        assert_eq!((e.kind, e.slope, e.scale, e.seed), (EPILOGUE_LEAKY_RELU | EPILOGUE_DROPOUT, 0.3, 2.0, 1));
        assert!(e.is_dropout() && !Elementwise::Relu.epilogue().is_dropout());
        // Nothing after a dropout, and one activation.
        assert_eq!(Elementwise::Dropout(KEEP).epilogue().then(Elementwise::Relu), None);
        assert_eq!(Elementwise::Relu.epilogue().then(Elementwise::LeakyRelu { slope: 0.1 }), None);
    }

    #[test]
    fn nothing_fuses_without_the_abilities() {
        let plain = GpuFusion::default();
        let p = plan(&[plain, DROPOUT, plain], plain);
        assert!(p.hidden.iter().all(|h| !h.absorbed && !h.dy_masked && h.mask_dx.is_none()));
        assert_eq!((p.hidden[2].dx, p.head_dx), (Some(1), Some(2)));
        assert_eq!(plan(&[], HEAD), Plan { hidden: vec![], head_dx: None, head_mask: Mask::NONE });
    }
}
