//! Architectures: a small description (`c16,c16s2,c32,c32s2,d0.5,f10`) read through the layer
//! registry ([`crate::layers::REGISTRY`]) into layers with concrete shapes, one flat parameter
//! vector with a named view per tensor, Glorot-uniform initialisation and a Keras-like summary.
//! Nothing here knows one layer kind from another: every fact about a layer comes from its module.
//!
//! # Layouts (the same as Keras, so weights move between the two without permutation)
//! - activations: NHWC, `[N, H, W, C]`, f32
//! - conv kernel: `[3, 3, C, K]` (ky, kx, input channel, filter), bias `[K]`
//! - dense kernel: `[F, K]` with `F = H·W·C` in NHWC flatten order, bias `[K]`
//! - all trainable tensors in one flat f32 vector (`params`), layer by layer in each layer's
//!   order (kernel then bias): Adam runs over it as one tensor, and the gradients share the same
//!   layout. Non-trainable tensors (moving statistics) in a second flat vector (`state`).

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::layers::{parse_token, token_help, HeadLayer, HiddenLayer, Init, LayerAt, LayerInfo, Parsed};
use crate::rng::Rng;

/// A named list of layers: hidden layers, then the head.
#[derive(Clone, Debug)]
pub struct Architecture {
    pub name: String,
    pub hidden: Vec<Arc<dyn HiddenLayer>>,
    pub head: Arc<dyn HeadLayer>,
}

/// Two architectures are the same net when their descriptions are (the names may differ:
/// `base` and `c16,c16s2,c32,c32s2,d0.5,f10` are the same).
impl PartialEq for Architecture {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.description() == other.description()
    }
}

/// The assignment's nets.
pub const NAMED_ARCHITECTURES: &[(&str, &str, &str)] = &[
    ("base", "c16,c16s2,c32,c32s2,d0.5,f10", "the assignment's CNN: 37,146 parameters"),
    ("maxpool", "c16,c16,p,c32,c32,p,d0.5,f10", "strided convolutions replaced by 2×2 max-pooling"),
    ("deep", "c8,c8s2,c16,c16s2,c32,c32s2,d0.5,f10", "the deeper 8-8-16-16-32-32 net"),
    (
        "cifar_bn",
        "c16n,bn,lrelu,c16s2n,bn,lrelu,c32n,bn,lrelu,c32s2n,bn,lrelu,d0.5,f10",
        "the base net with BatchNormalization and LeakyReLU after each convolution",
    ),
];

impl Architecture {
    /// A named architecture (`base`, `maxpool`, `deep`) or a description such as
    /// `c16,c16s2,c32,c32s2,d0.5,f10`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some((name, spec, _)) = NAMED_ARCHITECTURES.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(text)) {
            let mut arch = Self::parse_description(spec)?;
            arch.name = name.to_string();
            return Ok(arch);
        }
        Self::parse_description(text)
    }

    fn parse_description(text: &str) -> Result<Self> {
        let names: Vec<&str> = NAMED_ARCHITECTURES.iter().map(|(n, _, _)| *n).collect();
        let bad = |why: String| {
            Error::invalid(format!(
                "invalid architecture '{text}': {why}.\nUse a name ({}) or comma-separated layers: {}, \
                 e.g. c16,c16s2,c32,c32s2,d0.5,f10",
                names.join(", "),
                token_help()
            ))
        };
        let (mut hidden, mut head) = (Vec::new(), None);
        let tokens: Vec<&str> = text.split(',').map(str::trim).collect();
        if tokens.len() > MAX_LAYERS {
            return Err(bad(format!("{} layers, more than the {MAX_LAYERS} a model may have", tokens.len())));
        }
        for (i, token) in tokens.iter().enumerate() {
            match parse_token(token).map_err(|why| bad(format!("layer {} '{token}': {why}", i + 1)))? {
                Parsed::Hidden(layer) if head.is_none() => hidden.push(layer),
                Parsed::Head(layer) if head.is_none() => head = Some(layer),
                _ => return Err(bad("the dense layer (fN) must be the last layer, and there can be only one".into())),
            }
        }
        let head = head.ok_or_else(|| bad("it must end with a dense softmax layer, e.g. f10".into()))?;
        Ok(Architecture { name: text.to_string(), hidden, head })
    }

    /// Every layer, the head last.
    pub fn layers(&self) -> impl Iterator<Item = &dyn LayerInfo> {
        let hidden = self.hidden.iter().map(|l| l.as_ref() as &dyn LayerInfo);
        hidden.chain(std::iter::once(self.head.as_ref() as &dyn LayerInfo))
    }

    /// The description string (`c16,c16s2,...`), which [`Architecture::parse`] reads back.
    pub fn description(&self) -> String {
        self.layers().map(|l| l.token()).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let description = self.description();
        if self.name == description {
            write!(f, "{description}")
        } else {
            write!(f, "{} ({description})", self.name)
        }
    }
}

/// Output size and padding of a 'same' convolution along one axis, as TensorFlow computes them:
/// `out = ceil(in / s)`, `pad_total = max((out - 1)·s + k - in, 0)`, `pad_before = pad_total / 2`.
/// For stride 2 on an even input that is 0 before and 1 after.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    (output, total / 2)
}

/// A layer and where it sits in its model.
#[derive(Debug)]
pub struct Placed<L: ?Sized> {
    pub layer: Arc<L>,
    pub at: LayerAt,
}

impl<L: ?Sized> Clone for Placed<L> {
    fn clone(&self) -> Self {
        Placed { layer: self.layer.clone(), at: self.at.clone() }
    }
}

/// A model's trainable parameters and its non-trainable tensors, each one flat vector (see the
/// module docs for the layout).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub params: Vec<f32>,
    pub state: Vec<f32>,
}

/// An architecture laid out on a 32×32×3 input (or any other).
#[derive(Clone, Debug)]
pub struct Model {
    pub architecture: Architecture,
    pub input: [usize; 3],
    pub hidden: Vec<Placed<dyn HiddenLayer>>,
    pub head: Placed<dyn HeadLayer>,
    /// Elements of `params` (trainable) and `state` (non-trainable).
    pub param_count: usize,
    pub state_count: usize,
}

/// Two models are the same when their layers are, placed alike.
impl PartialEq for Model {
    fn eq(&self, other: &Self) -> bool {
        let ats = |m: &Model| m.layers().map(|(_, at)| at.clone()).collect::<Vec<_>>();
        self.architecture == other.architecture && self.input == other.input && ats(self) == ats(other)
    }
}

/// CIFAR-10 images.
pub const CIFAR_INPUT: [usize; 3] = [32, 32, 3];

/// The most elements one layer's output or tensor may have: every index into them is a u32 on
/// the GPU.
pub const MAX_TENSOR_LEN: usize = 1 << 28;

/// The most trainable parameters a model may have (67 million, 256 MiB of f32; training holds
/// four copies: weights, gradients and Adam's two moments). The assignment's nets have 37,146.
pub const MAX_PARAMS: usize = 1 << 26;

/// The most layers an architecture may have.
pub const MAX_LAYERS: usize = 256;

impl Model {
    pub fn new(architecture: &Architecture, input: [usize; 3]) -> Result<Self> {
        let mut counts = std::collections::HashMap::new();
        let (mut shape, mut params, mut state, mut flat) = (input, 0, 0, false);
        let mut place = |index: usize, layer: &dyn LayerInfo| -> Result<LayerAt> {
            let kind = layer.keras().0;
            let count = counts.entry(kind).or_insert(0usize);
            let name = if *count == 0 { kind.to_string() } else { format!("{kind}_{count}") };
            *count += 1;
            let at = LayerAt::place(layer, index, name, shape, params, state)
                .and_then(|at| at.after(layer, flat))
                .map_err(|why| {
                    Error::invalid(format!(
                        "architecture '{}': layer {} ({}): {why}",
                        architecture.name,
                        index + 1,
                        layer.token()
                    ))
                })?;
            flat = at.flat_output;
            // Products checked, not wrapped: a shape whose size overflows is too large too.
            let len = |shape: &[usize]| shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            let mut shapes = std::iter::once(&at.output[..]).chain(at.tensors.iter().map(|t| &t.spec.shape[..]));
            if shapes.any(|shape| len(shape).is_none_or(|len| len > MAX_TENSOR_LEN)) {
                return Err(Error::invalid(format!(
                    "architecture '{}': layer {} ({}) needs a tensor of more than {MAX_TENSOR_LEN} values",
                    architecture.name,
                    index + 1,
                    layer.token()
                )));
            }
            let (trainable, non_trainable) = at.param_counts();
            (params, state, shape) = (params + trainable, state + non_trainable, at.output);
            if params + state > MAX_PARAMS {
                return Err(Error::invalid(format!(
                    "architecture '{}': with layer {} ({}) it has {} parameters, more than the {} a model may have",
                    architecture.name,
                    index + 1,
                    layer.token(),
                    group_thousands(params + state),
                    group_thousands(MAX_PARAMS)
                )));
            }
            Ok(at)
        };
        let hidden = architecture
            .hidden
            .iter()
            .enumerate()
            .map(|(i, layer)| Ok(Placed { layer: layer.clone(), at: place(i, layer.as_ref())? }))
            .collect::<Result<Vec<_>>>()?;
        let head = Placed { layer: architecture.head.clone(), at: place(hidden.len(), architecture.head.as_ref())? };
        Ok(Model { architecture: architecture.clone(), input, hidden, head, param_count: params, state_count: state })
    }

    /// Every layer with where it sits, the head last.
    pub fn layers(&self) -> impl Iterator<Item = (&dyn LayerInfo, &LayerAt)> {
        let hidden = self.hidden.iter().map(|p| (p.layer.as_ref() as &dyn LayerInfo, &p.at));
        hidden.chain(std::iter::once((self.head.layer.as_ref() as &dyn LayerInfo, &self.head.at)))
    }

    /// The number of classes (the head's).
    pub fn classes(&self) -> usize {
        self.head.layer.classes()
    }

    /// Keras' initial weights: Glorot-uniform kernels (`U(±sqrt(6 / (fan_in + fan_out)))`) drawn
    /// from `seed` tensor by tensor in layer order, zero biases; non-trainable tensors at their
    /// initialisers.
    pub fn init(&self, seed: u64) -> Weights {
        let mut weights = Weights { params: vec![0f32; self.param_count], state: vec![0f32; self.state_count] };
        let mut rng = Rng::stream(seed, "glorot");
        for (_, at) in self.layers() {
            for tensor in &at.tensors {
                let values = if tensor.spec.trainable { &mut weights.params } else { &mut weights.state };
                let values = &mut values[tensor.range()];
                match tensor.spec.init {
                    Init::GlorotUniform { fan_in, fan_out } => {
                        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
                        values.iter_mut().for_each(|w| *w = rng.uniform(-limit, limit) as f32);
                    }
                    Init::Zeros => values.fill(0.0),
                    Init::Ones => values.fill(1.0),
                }
            }
        }
        weights
    }

    /// The trainable parameters of [`Model::init`].
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        self.init(seed).params
    }

    /// Checks that `weights` fit this model: lengths, and finite values.
    pub fn check_weights(&self, weights: &Weights) -> Result<()> {
        if weights.params.len() != self.param_count || weights.state.len() != self.state_count {
            return Err(Error::invalid(format!(
                "{} parameters and {} non-trainable values given, but {} has {} and {}",
                weights.params.len(),
                weights.state.len(),
                self.architecture,
                self.param_count,
                self.state_count
            )));
        }
        Ok(())
    }

    /// Multiply-adds of one sample's forward pass (the backward pass costs about twice that).
    pub fn forward_macs(&self) -> usize {
        self.layers().map(|(layer, at)| layer.forward_macs(at)).sum()
    }

    /// A summary table in the layout of Keras 3's `model.summary()`.
    pub fn summary(&self) -> String {
        let rows: Vec<_> = self.layers().flat_map(|(layer, at)| layer.summary_rows(at)).collect();
        let (a, b, c) = (33, 24, 15);
        let line = |l: char, m: char, r: char, fill: char| {
            format!(
                "{l}{}{m}{}{m}{}{r}\n",
                fill.to_string().repeat(a),
                fill.to_string().repeat(b),
                fill.to_string().repeat(c)
            )
        };
        let mut out = format!("Model: \"{}\"\n", self.architecture.name);
        out += &line('┏', '┳', '┓', '━');
        out += &format!(
            "┃ {:<w1$}┃ {:<w2$}┃ {:>w3$} ┃\n",
            "Layer (type)",
            "Output Shape",
            "Param #",
            w1 = a - 1,
            w2 = b - 1,
            w3 = c - 2
        );
        out += &line('┡', '╇', '┩', '━');
        for (i, row) in rows.iter().enumerate() {
            // Keras wraps a long "name (Class)" before the class, onto a second line.
            let (first, second) = match row.layer.split_once(" (") {
                Some((name, class)) if row.layer.chars().count() > a - 2 => {
                    (name.to_string(), Some(format!("({class}")))
                }
                _ => (row.layer.clone(), None),
            };
            out += &format!(
                "│ {:<w1$}│ {:<w2$}│ {:>w3$} │\n",
                first,
                row.shape,
                group_thousands(row.params),
                w1 = a - 1,
                w2 = b - 1,
                w3 = c - 2
            );
            if let Some(second) = second {
                out += &format!("│ {:<w1$}│ {:<w2$}│ {:>w3$} │\n", second, "", "", w1 = a - 1, w2 = b - 1, w3 = c - 2);
            }
            if i + 1 < rows.len() {
                out += &line('├', '┼', '┤', '─');
            }
        }
        out += &line('└', '┴', '┘', '─');
        let size = |n: usize| {
            let bytes = n as f64 * 4.0;
            if bytes >= 1024.0 * 1024.0 {
                format!("{:.2} MB", bytes / 1024.0 / 1024.0)
            } else if bytes >= 1024.0 {
                format!("{:.2} KB", bytes / 1024.0)
            } else {
                format!("{bytes:.2} B")
            }
        };
        let total = self.param_count + self.state_count;
        out += &format!(" Total params: {} ({})\n", group_thousands(total), size(total));
        out += &format!(" Trainable params: {} ({})\n", group_thousands(self.param_count), size(self.param_count));
        out += &format!(" Non-trainable params: {} ({})\n", group_thousands(self.state_count), size(self.state_count));
        out
    }
}

/// 37146 → "37,146".
pub fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> Model {
        Model::new(&Architecture::parse(name).unwrap(), CIFAR_INPUT).unwrap()
    }

    #[test]
    fn the_assignments_nets_have_keras_parameter_counts() {
        // Keras: conv 3·3·C·K + K, dense F·10 + 10.
        assert_eq!(model("base").param_count, 37_146);
        assert_eq!(model("maxpool").param_count, 37_146);
        // deep: 224 + 584 + 1,168 + 2,320 + 4,640 + 9,248 + (4·4·32·10 + 10 = 5,130) = 23,314.
        assert_eq!(model("deep").param_count, 23_314);
    }

    #[test]
    fn same_padding_follows_tensorflow() {
        assert_eq!(same_padding(32, 3, 1), (32, 1));
        assert_eq!(same_padding(32, 3, 2), (16, 0)); // pad 0 before, 1 after
        assert_eq!(same_padding(31, 3, 2), (16, 1)); // odd input: 1 before, 1 after
        assert_eq!(same_padding(1, 3, 2), (1, 1));
        assert_eq!(same_padding(5, 3, 1), (5, 1));
    }

    #[test]
    fn shapes_flow_through_the_base_net() {
        let m = model("base");
        let shapes: Vec<[usize; 3]> = m.layers().map(|(_, at)| at.output).collect();
        assert_eq!(shapes, vec![[32, 32, 16], [16, 16, 16], [16, 16, 32], [8, 8, 32], [8, 8, 32], [1, 1, 10]]);
        assert_eq!(m.head.at.input_len(), 2048);
        assert_eq!(m.hidden[0].at.name, "conv2d");
        assert_eq!(m.hidden[1].at.name, "conv2d_1");
        // 2.82 M multiply-adds per image forward, as the peers' README says: output pixels ×
        // taps per pixel, 32²·16·27 + 16²·16·144 + 16²·32·144 + 8²·32·288 + 2048·10.
        assert_eq!(m.forward_macs(), 442_368 + 589_824 + 1_179_648 + 589_824 + 20_480);
    }

    #[test]
    fn descriptions_round_trip() {
        for (name, spec, _) in NAMED_ARCHITECTURES {
            let arch = Architecture::parse(name).unwrap();
            assert_eq!(arch.description(), *spec);
            assert_eq!(Architecture::parse(spec).unwrap().description(), arch.description());
        }
    }

    #[test]
    fn bad_descriptions_say_what_is_wrong() {
        for (text, why) in [
            ("c16,c16s3,f10", "the stride must be 1 or 2"),
            ("c0,f10", "positive whole number"),
            ("cx,f10", "positive whole number"),
            ("c16,d1.5,f10", "[0, 1)"),
            ("c16,q,f10", "unknown layer type"),
            ("c16,,f10", "empty layer"),
            ("c16,c32", "must end with a dense"),
            ("f10,c16,f10", "must be the last"),
            ("", "empty layer"),
        ] {
            let message = Architecture::parse(text).unwrap_err().to_string();
            assert!(message.contains(why), "'{text}': {message}");
        }
        let too_small = Architecture::parse("c4s2,c4s2,c4s2,c4s2,c4s2,p,f10").unwrap();
        assert!(Model::new(&too_small, CIFAR_INPUT).unwrap_err().to_string().contains("max-pool"));
    }

    #[test]
    fn glorot_init_is_seeded_bounded_and_biases_are_zero() {
        let m = model("base");
        let a = m.init_params(1);
        assert_eq!(a, m.init_params(1));
        assert_ne!(a, m.init_params(2));
        for (_, layer) in m.layers() {
            if layer.tensors.is_empty() {
                continue;
            }
            let Init::GlorotUniform { fan_in, fan_out } = layer.tensor("kernel").spec.init else {
                panic!("Glorot kernels")
            };
            let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
            let kernel = &a[layer.tensor("kernel").range()];
            assert!(kernel.iter().all(|w| w.abs() <= limit));
            // A uniform on ±limit has standard deviation limit/√3.
            let std = (kernel.iter().map(|w| w * w).sum::<f32>() / kernel.len() as f32).sqrt();
            assert!((std - limit / 3f32.sqrt()).abs() < 0.1 * limit, "{}: std {std}, limit {limit}", layer.name);
            assert!(a[layer.tensor("bias").range()].iter().all(|&b| b == 0.0));
        }
    }

    #[test]
    fn the_bn_net_has_keras_parameter_counts_and_summary() {
        // Keras 3's model.summary() of the same net: 37,530 total, 37,338 trainable, 192 non-
        // trainable (γ, β trained; the moving mean and variance not), and the long names
        // wrapped before the class.
        let m = model("cifar_bn");
        assert_eq!((m.param_count, m.state_count), (37_338, 192));
        let s = m.summary();
        assert!(s.contains("│ batch_normalization_1           │ (None, 16, 16, 16)     │            64 │\n│ (BatchNormalization)            │"), "{s}");
        assert!(s.contains("leaky_re_lu_3 (LeakyReLU)") && s.contains("Non-trainable params: 192 (768.00 B)"), "{s}");
        let hidden = model("c8n,bn,relu,h32,d0.5,lrelu,f10");
        let rows: Vec<String> = hidden
            .layers()
            .flat_map(|(l, at)| l.summary_rows(at))
            .map(|r| format!("{} {}", r.layer, r.shape))
            .collect();
        assert_eq!(
            rows,
            [
                "conv2d (Conv2D) (None, 32, 32, 8)",
                "batch_normalization (BatchNormalization) (None, 32, 32, 8)",
                "activation (Activation) (None, 32, 32, 8)",
                "flatten (Flatten) (None, 8192)",
                "dense (Dense) (None, 32)",
                "dropout (Dropout) (None, 32)",
                "leaky_re_lu (LeakyReLU) (None, 32)",
                "dense_1 (Dense) (None, 10)",
            ]
        );
        let message =
            Architecture::parse("h32,c8,f10").and_then(|a| Model::new(&a, CIFAR_INPUT)).unwrap_err().to_string();
        assert!(message.contains("layer 2 (c8)") && message.contains("follows a dense layer"), "{message}");
    }

    #[test]
    fn the_summary_lists_every_layer_and_the_total() {
        let s = model("base").summary();
        assert!(s.contains("conv2d_3 (Conv2D)"), "{s}");
        assert!(s.contains("(None, 8, 8, 32)"), "{s}");
        assert!(s.contains("flatten (Flatten)") && s.contains("(None, 2048)"), "{s}");
        assert!(s.contains("20,490"), "{s}");
        assert!(s.contains("Total params: 37,146 (145.10 KB)"), "{s}");
    }
}
