//! Architectures: a small description (`c16,c16s2,c32,c32s2,d0.5,f10`) turned into layers with
//! concrete shapes, one flat parameter vector with a named view per tensor, Glorot-uniform
//! initialisation and a Keras-like summary.
//!
//! # Layouts (the same as Keras, so weights move between the two without permutation)
//! - activations: NHWC, `[N, H, W, C]`, f32
//! - conv kernel: `[3, 3, C, K]` (ky, kx, input channel, filter), bias `[K]`
//! - dense kernel: `[F, 10]` with `F = H·W·C` in NHWC flatten order, bias `[10]`
//! - all parameters in one flat f32 vector, layer by layer, kernel then bias: Adam runs over it as
//!   one tensor, and the gradients share the same layout.

use std::fmt;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// One layer of an architecture description.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerSpec {
    /// `cK` / `cKsS`: Conv2D with K filters, 3×3, stride S (1 or 2), Keras 'same' padding, bias, ReLU.
    Conv { filters: usize, stride: usize },
    /// `p`: MaxPooling2D, 2×2, stride 2, 'valid' padding.
    MaxPool,
    /// `dR`: inverted dropout with rate R in [0, 1).
    Dropout { rate: f32 },
    /// `fU`: Flatten (NHWC) + Dense with U units and softmax; must be last.
    Dense { units: usize },
}

/// A named list of layers.
#[derive(Clone, Debug, PartialEq)]
pub struct Architecture {
    pub name: String,
    pub layers: Vec<LayerSpec>,
}

/// The assignment's nets.
pub const NAMED_ARCHITECTURES: &[(&str, &str, &str)] = &[
    ("base", "c16,c16s2,c32,c32s2,d0.5,f10", "the assignment's CNN: 37,146 parameters"),
    ("maxpool", "c16,c16,p,c32,c32,p,d0.5,f10", "strided convolutions replaced by 2×2 max-pooling"),
    ("deep", "c8,c8s2,c16,c16s2,c32,c32s2,d0.5,f10", "the deeper 8-8-16-16-32-32 net"),
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
                "invalid architecture '{text}': {why}.\nUse a name ({}) or comma-separated layers: cK (3×3 conv, K filters), \
                 cKs2 (stride 2), p (2×2 max-pool), dR (dropout, rate R), and a final f10 (dense softmax), \
                 e.g. c16,c16s2,c32,c32s2,d0.5,f10",
                names.join(", ")
            ))
        };
        let mut layers = Vec::new();
        for (i, token) in text.split(',').map(str::trim).enumerate() {
            let at = |why: &str| bad(format!("layer {} '{token}': {why}", i + 1));
            let number = |s: &str| -> Option<usize> { s.parse().ok().filter(|&n| n > 0) };
            let layer = if let Some(rest) = token.strip_prefix('c') {
                let (filters, stride) = match rest.split_once('s') {
                    Some((k, s)) => (k, s),
                    None => (rest, "1"),
                };
                let filters = number(filters).ok_or_else(|| at("the filter count must be a positive whole number"))?;
                let stride = match stride {
                    "1" => 1,
                    "2" => 2,
                    _ => return Err(at("the stride must be 1 or 2")),
                };
                if filters > 1024 {
                    return Err(at("at most 1024 filters"));
                }
                LayerSpec::Conv { filters, stride }
            } else if token == "p" || token == "p2" {
                LayerSpec::MaxPool
            } else if let Some(rate) = token.strip_prefix('d') {
                let rate: f32 = rate.parse().map_err(|_| at("the dropout rate must be a number"))?;
                if !(0.0..1.0).contains(&rate) {
                    return Err(at("the dropout rate must be in [0, 1)"));
                }
                LayerSpec::Dropout { rate }
            } else if let Some(units) = token.strip_prefix('f') {
                let units = number(units).ok_or_else(|| at("the unit count must be a positive whole number"))?;
                LayerSpec::Dense { units }
            } else if token.is_empty() {
                return Err(at("empty layer"));
            } else {
                return Err(at("unknown layer type"));
            };
            layers.push(layer);
        }
        match layers.iter().position(|l| matches!(l, LayerSpec::Dense { .. })) {
            Some(i) if i + 1 == layers.len() => {}
            Some(_) => {
                return Err(bad("the dense layer (fN) must be the last layer, and there can be only one".into()))
            }
            None => return Err(bad("it must end with a dense softmax layer, e.g. f10".into())),
        }
        Ok(Architecture { name: text.to_string(), layers })
    }

    /// The description string (`c16,c16s2,...`), which [`Architecture::parse`] reads back.
    pub fn description(&self) -> String {
        self.layers
            .iter()
            .map(|l| match l {
                LayerSpec::Conv { filters, stride: 1 } => format!("c{filters}"),
                LayerSpec::Conv { filters, stride } => format!("c{filters}s{stride}"),
                LayerSpec::MaxPool => "p".to_string(),
                LayerSpec::Dropout { rate } => format!("d{rate}"),
                LayerSpec::Dense { units } => format!("f{units}"),
            })
            .collect::<Vec<_>>()
            .join(",")
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

/// A layer with its concrete shapes and where its parameters live in the flat vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub spec: LayerSpec,
    /// Keras-style name: conv2d, conv2d_1, max_pooling2d, dropout, dense, ...
    pub name: String,
    /// `[H, W, C]` of one input sample (for dense: the tensor before flattening).
    pub input: [usize; 3],
    /// `[H, W, C]` of one output sample (dense: `[1, 1, units]`).
    pub output: [usize; 3],
    /// Offset of the kernel in the flat parameter vector, and its length (0 for no parameters).
    pub kernel_offset: usize,
    pub kernel_len: usize,
    /// Offset of the bias (right after the kernel) and its length.
    pub bias_offset: usize,
    pub bias_len: usize,
}

impl Layer {
    pub fn param_count(&self) -> usize {
        self.kernel_len + self.bias_len
    }

    /// Elements of one sample's input and output.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }

    /// (top, left) padding of a convolution; (0, 0) for other layers.
    pub fn padding(&self) -> (usize, usize) {
        match self.spec {
            LayerSpec::Conv { stride, .. } => {
                (same_padding(self.input[0], 3, stride).1, same_padding(self.input[1], 3, stride).1)
            }
            _ => (0, 0),
        }
    }

    /// Glorot-uniform fans of the kernel as Keras computes them: conv `(3·3·C, 3·3·K)`,
    /// dense `(F, U)`.
    pub fn fans(&self) -> (usize, usize) {
        match self.spec {
            LayerSpec::Conv { filters, .. } => (9 * self.input[2], 9 * filters),
            LayerSpec::Dense { units } => (self.input_len(), units),
            _ => (0, 0),
        }
    }
}

/// An architecture laid out on a 32×32×3 input (or any other).
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub architecture: Architecture,
    pub input: [usize; 3],
    pub layers: Vec<Layer>,
    pub param_count: usize,
}

/// CIFAR-10 images.
pub const CIFAR_INPUT: [usize; 3] = [32, 32, 3];

impl Model {
    pub fn new(architecture: &Architecture, input: [usize; 3]) -> Result<Self> {
        let mut layers = Vec::new();
        let mut shape = input;
        let mut offset = 0;
        let mut counts = std::collections::HashMap::new();
        for spec in &architecture.layers {
            let [h, w, c] = shape;
            let (kind, output, kernel_len, bias_len) = match *spec {
                LayerSpec::Conv { filters, stride } => {
                    let (oh, _) = same_padding(h, 3, stride);
                    let (ow, _) = same_padding(w, 3, stride);
                    ("conv2d", [oh, ow, filters], 9 * c * filters, filters)
                }
                LayerSpec::MaxPool => {
                    if h < 2 || w < 2 {
                        return Err(Error::invalid(format!(
                            "architecture '{}': a 2×2 max-pool needs at least 2×2 input, but gets {h}×{w}",
                            architecture.name
                        )));
                    }
                    ("max_pooling2d", [h / 2, w / 2, c], 0, 0)
                }
                LayerSpec::Dropout { .. } => ("dropout", shape, 0, 0),
                LayerSpec::Dense { units } => ("dense", [1, 1, units], h * w * c * units, units),
            };
            let count = counts.entry(kind).or_insert(0usize);
            let name = if *count == 0 { kind.to_string() } else { format!("{kind}_{count}") };
            *count += 1;
            layers.push(Layer {
                spec: *spec,
                name,
                input: shape,
                output,
                kernel_offset: offset,
                kernel_len,
                bias_offset: offset + kernel_len,
                bias_len,
            });
            offset += kernel_len + bias_len;
            shape = output;
        }
        Ok(Model { architecture: architecture.clone(), input, layers, param_count: offset })
    }

    /// The number of classes (units of the final dense layer).
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output[2])
    }

    /// The final dense layer.
    pub fn dense(&self) -> &Layer {
        self.layers.last().expect("a model always ends with its dense layer")
    }

    /// Keras' initial parameters: Glorot-uniform kernels (`U(±sqrt(6 / (fan_in + fan_out)))`),
    /// zero biases, drawn from `seed` layer by layer.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut params = vec![0f32; self.param_count];
        let mut rng = Rng::stream(seed, "glorot");
        for layer in &self.layers {
            if layer.kernel_len == 0 {
                continue;
            }
            let (fan_in, fan_out) = layer.fans();
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
            for w in &mut params[layer.kernel_offset..][..layer.kernel_len] {
                *w = rng.uniform(-limit, limit) as f32;
            }
        }
        params
    }

    /// Multiply-adds of one sample's forward pass (the backward pass costs about twice that).
    pub fn forward_macs(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l.spec {
                LayerSpec::Conv { .. } => l.output_len() * 9 * l.input[2],
                LayerSpec::Dense { .. } => l.kernel_len,
                _ => 0,
            })
            .sum()
    }

    /// A summary table in the layout of Keras 3's `model.summary()`.
    pub fn summary(&self) -> String {
        let mut rows: Vec<(String, String, usize)> = Vec::new();
        for layer in &self.layers {
            let [h, w, c] = layer.output;
            let kind = match layer.spec {
                LayerSpec::Conv { .. } => "Conv2D",
                LayerSpec::MaxPool => "MaxPooling2D",
                LayerSpec::Dropout { .. } => "Dropout",
                LayerSpec::Dense { .. } => "Dense",
            };
            if let LayerSpec::Dense { .. } = layer.spec {
                rows.push(("flatten (Flatten)".to_string(), format!("(None, {})", layer.input_len()), 0));
                rows.push((format!("{} ({kind})", layer.name), format!("(None, {c})"), layer.param_count()));
            } else {
                rows.push((format!("{} ({kind})", layer.name), format!("(None, {h}, {w}, {c})"), layer.param_count()));
            }
        }
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
        for (i, (name, shape, params)) in rows.iter().enumerate() {
            out += &format!(
                "│ {name:<w1$}│ {shape:<w2$}│ {:>w3$} │\n",
                group_thousands(*params),
                w1 = a - 1,
                w2 = b - 1,
                w3 = c - 2
            );
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
        out += &format!(" Total params: {} ({})\n", group_thousands(self.param_count), size(self.param_count));
        out += &format!(" Trainable params: {} ({})\n", group_thousands(self.param_count), size(self.param_count));
        out += " Non-trainable params: 0 (0.00 B)\n";
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
        let shapes: Vec<[usize; 3]> = m.layers.iter().map(|l| l.output).collect();
        assert_eq!(shapes, vec![[32, 32, 16], [16, 16, 16], [16, 16, 32], [8, 8, 32], [8, 8, 32], [1, 1, 10]]);
        assert_eq!(m.dense().input_len(), 2048);
        assert_eq!(m.layers[1].padding(), (0, 0));
        assert_eq!(m.layers[0].padding(), (1, 1));
        assert_eq!(m.layers[0].name, "conv2d");
        assert_eq!(m.layers[1].name, "conv2d_1");
        // 2.82 M multiply-adds per image forward, as the peers' README says: output pixels ×
        // taps per pixel, 32²·16·27 + 16²·16·144 + 16²·32·144 + 8²·32·288 + 2048·10.
        assert_eq!(m.forward_macs(), 442_368 + 589_824 + 1_179_648 + 589_824 + 20_480);
    }

    #[test]
    fn descriptions_round_trip() {
        for (name, spec, _) in NAMED_ARCHITECTURES {
            let arch = Architecture::parse(name).unwrap();
            assert_eq!(arch.description(), *spec);
            assert_eq!(Architecture::parse(spec).unwrap().layers, arch.layers);
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
        for layer in &m.layers {
            if layer.kernel_len == 0 {
                continue;
            }
            let (fan_in, fan_out) = layer.fans();
            let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
            let kernel = &a[layer.kernel_offset..][..layer.kernel_len];
            assert!(kernel.iter().all(|w| w.abs() <= limit));
            // A uniform on ±limit has standard deviation limit/√3.
            let std = (kernel.iter().map(|w| w * w).sum::<f32>() / kernel.len() as f32).sqrt();
            assert!((std - limit / 3f32.sqrt()).abs() < 0.1 * limit, "{}: std {std}, limit {limit}", layer.name);
            assert!(a[layer.bias_offset..][..layer.bias_len].iter().all(|&b| b == 0.0));
        }
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
