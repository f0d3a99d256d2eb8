//! The fast CPU layers and engine against the plain-loop references of `wgpu_cnn::layers` and
//! `ReferenceEngine`: every layer on random tensors of odd shapes (stride 1 and 2, even and odd
//! sizes, channel counts that fill no vector, partial batches, outputs pre-filled with NaN), for
//! every instruction set this CPU runs; whole training epochs from the same weights; and a
//! count of heap allocations inside a training step.
//!
//! Tolerances are abs + rel: `|fast − reference| ≤ atol + rtol·|reference|`, stated at each
//! check. Summation orders differ (tiles, FMA), so agreement is to f32 rounding; dropout, max-
//! pooling and Adam do the reference's operations in its order and must match bit for bit.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;

mod common;

use common::cifar_sample;
use wgpu_cnn::adam::fast as fast_adam;
use wgpu_cnn::adam::{self, AdamConfig};
use wgpu_cnn::data::Dataset;
use wgpu_cnn::fast::{Isa, Layout};
use wgpu_cnn::layers::conv2d::fast::{self as fast_conv, ConvPlan};
use wgpu_cnn::layers::conv2d::{self, Conv2dShape};
use wgpu_cnn::layers::dense_softmax::fast::{self as fast_dense, DensePlan};
use wgpu_cnn::layers::dense_softmax::{self, DenseShape};
use wgpu_cnn::layers::dropout::fast::{self as fast_dropout, DropoutPlan};
use wgpu_cnn::layers::dropout::{self, DropoutShape};
use wgpu_cnn::layers::maxpool2d::fast::{self as fast_pool, PoolPlan};
use wgpu_cnn::layers::maxpool2d::{self, PoolShape};
use wgpu_cnn::layers::Pass;
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::train::fast::{FastCpuEngine, FastOptions};
use wgpu_cnn::train::reference::ReferenceEngine;
use wgpu_cnn::train::{wait, Engine, Inference, RawMetrics, Step, TrainConfig, Trainer};

// ---------------------------------------------------------------------------------------------
// Counting allocator: heap allocations made by the current thread.

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A deterministic xorshift generator for test tensors.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    fn value(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn tensor(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
}

/// Fails with the first mismatches and the largest difference unless every element satisfies
/// `|actual − expected| ≤ atol + rtol·|expected|` (NaN never does).
#[track_caller]
fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    let bad: Vec<usize> = (0..expected.len())
        .filter(|&i| {
            let within = (actual[i] - expected[i]).abs() <= atol + rtol * expected[i].abs();
            !within
        })
        .collect();
    let max =
        actual
            .iter()
            .zip(expected)
            .map(|(a, e)| (a - e).abs())
            .fold(0.0f32, |m, d| if d > m || d.is_nan() { d } else { m });
    let first: Vec<String> =
        bad.iter().take(6).map(|&i| format!("[{i}] got {} expected {}", actual[i], expected[i])).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} elements differ beyond {atol} + {rtol}·|expected| (max difference {max:e}); first: {}",
        bad.len(),
        expected.len(),
        first.join(", ")
    );
}

#[track_caller]
fn assert_bits_equal(actual: &[f32], expected: &[f32], what: &str) {
    let bad: Vec<String> = (0..expected.len())
        .filter(|&i| actual[i].to_bits() != expected[i].to_bits())
        .take(6)
        .map(|i| format!("[{i}] got {} expected {}", actual[i], expected[i]))
        .collect();
    assert!(bad.is_empty(), "{what}: not bit-identical; first: {}", bad.join(", "));
}

/// A buffer of `layout` for `batch` images: NaN in every pixel, zero in the border (which the
/// fast layers read as padding and never write).
fn nan_buffer(layout: &Layout, batch: usize) -> Vec<f32> {
    let mut buffer = layout.zeros(batch);
    for n in 0..batch {
        for y in 0..layout.height {
            buffer[layout.at(n, y, 0)..][..layout.width * layout.channels].fill(f32::NAN);
        }
    }
    buffer
}

/// Asserts the border of a padded buffer is still all zeros (nothing wrote there).
#[track_caller]
fn assert_border_zero(buffer: &[f32], layout: &Layout, batch: usize, what: &str) {
    let mut interior = vec![false; layout.len(batch)];
    for n in 0..batch {
        for y in 0..layout.height {
            let start = layout.at(n, y, 0);
            interior[start..start + layout.width * layout.channels].fill(true);
        }
    }
    let bad = (0..layout.len(batch)).filter(|&i| !interior[i] && buffer[i] != 0.0).count();
    assert_eq!(bad, 0, "{what}: {bad} border elements are not zero");
}

fn isas() -> Vec<Isa> {
    let all = Isa::supported();
    eprintln!("instruction sets tested: {}", all.iter().map(|i| i.name()).collect::<Vec<_>>().join(", "));
    all
}

// ---------------------------------------------------------------------------------------------
// Convolution.

/// (batch, [H, W, C], K, stride): odd and even sizes, both strides, channel counts that fill
/// no vector and counts that need several vector groups (K = 70 > 64 lanes), 1×1 images.
const CONV_CASES: &[(usize, [usize; 3], usize, usize)] = &[
    (2, [7, 5, 3], 5, 1),
    (2, [7, 5, 3], 5, 2),
    (3, [8, 6, 16], 16, 2),
    (1, [5, 7, 5], 3, 2),
    (2, [6, 6, 16], 32, 1),
    (2, [9, 9, 32], 32, 2),
    (2, [10, 12, 8], 8, 2),
    (1, [4, 4, 8], 40, 1),
    (2, [3, 3, 70], 20, 1),
    (1, [5, 6, 9], 70, 2),
    (1, [1, 1, 3], 4, 2),
    (1, [2, 3, 1], 1, 1),
    (2, [32, 32, 3], 16, 1),
    (2, [17, 33, 16], 24, 1),
];

/// Runs the four fast convolution passes on `batch_used ≤ batch` images of random data and
/// compares them with the reference.
fn check_conv(isa: Isa, batch: usize, input: [usize; 3], filters: usize, stride: usize, y_pad: usize, seed: u64) {
    let full = Conv2dShape::new(batch, input, filters, stride);
    let used = if batch > 1 { batch - 1 } else { 1 };
    let s = full.with_batch(used);
    let what = format!("{isa:?} conv {input:?}→{filters} s{stride} batch {used}/{batch} y_pad {y_pad}");
    let mut rng = Rng::new(seed);
    let x = rng.tensor(s.input_len());
    let kernel = rng.tensor(s.kernel_len());
    let bias = rng.tensor(filters);
    let dy = rng.tensor(s.output_len());

    let mut plan = ConvPlan::new(&full, isa, y_pad);
    let mut x_stored = vec![0.0; plan.x.len(batch)];
    plan.x.pack(&mut x_stored, &x, used);

    // Forward: y = relu(conv + b).
    let mut expected_y = vec![f32::NAN; s.output_len()];
    conv2d::forward(&mut expected_y, &x, &kernel, &bias, &s);
    let mut y_stored = nan_buffer(&plan.y, batch);
    fast_conv::forward(&mut y_stored, &x_stored, &kernel, &bias, &s, &mut plan);
    let mut y = vec![f32::NAN; s.output_len()];
    plan.y.unpack(&mut y, &y_stored, used);
    // Sums of 9C products of values in [-1, 1): f32 rounding of either order stays far below.
    assert_close(&y, &expected_y, 2e-5, 2e-5, &format!("{what}: forward"));
    assert_border_zero(&y_stored, &plan.y, used, &format!("{what}: y border"));
    // The untouched last image of y is still NaN inside: only `used` images were written.
    if used < batch && y_pad == 0 {
        assert!(
            y_stored[plan.y.len(used)..plan.y.len(batch)].iter().all(|v| v.is_nan()),
            "{what}: wrote past the batch"
        );
    }

    // Backward, through the reference's y so that both see the same ReLU mask.
    let mut y_for_mask = vec![0.0; plan.y.len(batch)];
    plan.y.pack(&mut y_for_mask, &expected_y, used);
    let mut dpre = nan_buffer(&plan.dpre, batch);
    fast_conv::relu_backward(&mut dpre, &dy, &y_for_mask, &s, &plan);
    assert_border_zero(&dpre, &plan.dpre, used, &format!("{what}: dpre border"));

    let mut expected_dx = vec![f32::NAN; s.input_len()];
    conv2d::backward_input(&mut expected_dx, &dy, &expected_y, &kernel, &s);
    let mut dx = vec![f32::NAN; plan.dx.len(batch)];
    fast_conv::backward_input(&mut dx, &dpre, &kernel, &s, &mut plan);
    assert_close(&dx[..s.input_len()], &expected_dx, 2e-5, 2e-5, &format!("{what}: backward_input"));

    // Fused through the previous layer's ReLU, x standing in for that layer's output: dx·(x > 0),
    // written padded as the previous layer's dpre.
    let masked: Vec<f32> = expected_dx.iter().zip(&x).map(|(&g, &v)| if v > 0.0 { g } else { 0.0 }).collect();
    let mut dpre_before = nan_buffer(&plan.x, batch);
    fast_conv::backward_input_relu(&mut dpre_before, &dpre, &kernel, &x_stored, &s, &mut plan);
    let mut unpacked = vec![f32::NAN; s.input_len()];
    plan.x.unpack(&mut unpacked, &dpre_before, used);
    assert_close(&unpacked, &masked, 2e-5, 2e-5, &format!("{what}: backward_input_relu"));
    assert_border_zero(&dpre_before, &plan.x, used, &format!("{what}: backward_input_relu border"));

    let (mut expected_dk, mut expected_db) = (vec![f32::NAN; s.kernel_len()], vec![f32::NAN; filters]);
    conv2d::backward_weight(&mut expected_dk, &mut expected_db, &dy, &expected_y, &x, &s);
    let (mut dk, mut db) = (vec![f32::NAN; s.kernel_len()], vec![f32::NAN; filters]);
    fast_conv::backward_weight(&mut dk, &mut db, &dpre, &x_stored, &s, &plan);
    // Sums over every output pixel of the batch (up to ~1,100 terms here).
    assert_close(&dk, &expected_dk, 1e-4, 1e-4, &format!("{what}: dkernel"));
    assert_close(&db, &expected_db, 1e-4, 1e-4, &format!("{what}: dbias"));
}

#[test]
fn fast_convolution_matches_the_reference_forward_and_every_gradient() {
    for isa in isas() {
        for (i, &(batch, input, filters, stride)) in CONV_CASES.iter().enumerate() {
            for y_pad in [0, 1] {
                check_conv(isa, batch, input, filters, stride, y_pad, 100 + i as u64);
            }
        }
    }
}

#[test]
fn fast_convolution_matches_on_the_base_nets_layers() {
    let isa = Isa::best();
    for (i, &(input, filters, stride)) in
        [([32, 32, 3], 16, 1), ([32, 32, 16], 16, 2), ([16, 16, 16], 32, 1), ([16, 16, 32], 32, 2)].iter().enumerate()
    {
        check_conv(isa, 3, input, filters, stride, 1, 7 + i as u64);
    }
}

#[test]
// Where panics abort (wasm32-wasip1), one cannot be caught: the check is made on the others.
#[cfg_attr(panic = "abort", ignore = "panics abort on this target")]
fn a_plan_rejects_a_shape_it_was_not_built_for() {
    let plan = ConvPlan::new(&Conv2dShape::new(4, [8, 8, 3], 8, 1), Isa::portable(), 0);
    let other = Conv2dShape::new(4, [8, 8, 3], 8, 2);
    let result = std::panic::catch_unwind(|| {
        let mut dpre = vec![0.0; 10_000];
        fast_conv::relu_backward(&mut dpre, &[0.0; 10_000], &[0.0; 10_000], &other, &plan)
    });
    assert!(result.is_err(), "a stride-2 shape on a stride-1 plan must panic");
}

// ---------------------------------------------------------------------------------------------
// Max-pooling and dropout: bit-exact.

#[test]
fn fast_max_pooling_equals_the_reference_bit_for_bit() {
    for isa in isas() {
        for (i, &(batch, input)) in
            [(2, [7, 5, 3]), (3, [8, 6, 16]), (2, [32, 32, 16]), (1, [3, 2, 33]), (2, [2, 2, 1])].iter().enumerate()
        {
            let full = PoolShape::new(batch, input);
            let used = batch.max(2) - 1;
            let s = full.with_batch(used);
            let mut rng = Rng::new(300 + i as u64);
            // Repeated values (rounded to 1/4) make ties, where the first maximum must win.
            let x: Vec<f32> = rng.tensor(s.input_len()).iter().map(|v| (v * 4.0).round() / 4.0).collect();
            let dy = rng.tensor(s.output_len());
            for (x_pad, y_pad) in [(0, 0), (1, 1), (0, 1)] {
                let what = format!("{isa:?} pool {input:?} batch {used}/{batch} pads {x_pad}/{y_pad}");
                let plan = PoolPlan::new(&full, isa, x_pad, y_pad);
                let mut x_stored = vec![0.0; plan.x.len(batch)];
                plan.x.pack(&mut x_stored, &x, used);
                let mut expected = vec![f32::NAN; s.output_len()];
                maxpool2d::forward(&mut expected, &x, &s);
                let mut y_stored = nan_buffer(&plan.y, batch);
                fast_pool::forward(&mut y_stored, &x_stored, &s, &plan);
                let mut y = vec![f32::NAN; s.output_len()];
                plan.y.unpack(&mut y, &y_stored, used);
                assert_bits_equal(&y, &expected, &format!("{what}: forward"));
                assert_border_zero(&y_stored, &plan.y, used, &format!("{what}: y border"));

                let mut expected_dx = vec![f32::NAN; s.input_len()];
                maxpool2d::backward_input(&mut expected_dx, &dy, &x, &s);
                let mut dx = vec![f32::NAN; plan.dx.len(batch)];
                fast_pool::backward_input(&mut dx, &dy, &x_stored, &s, &plan);
                assert_bits_equal(&dx[..s.input_len()], &expected_dx, &format!("{what}: backward_input"));

                // Fused through the ReLU of the layer before (x as its output).
                let masked: Vec<f32> =
                    expected_dx.iter().zip(&x).map(|(&g, &v)| if v > 0.0 { g } else { 0.0 }).collect();
                let mut dpre_before = nan_buffer(&plan.dpre_before, batch);
                fast_pool::backward_input_relu(&mut dpre_before, &dy, &x_stored, &s, &plan);
                let mut unpacked = vec![f32::NAN; s.input_len()];
                plan.dpre_before.unpack(&mut unpacked, &dpre_before, used);
                assert_bits_equal(&unpacked, &masked, &format!("{what}: backward_input_relu"));
                assert_border_zero(&dpre_before, &plan.dpre_before, used, &format!("{what}: fused border"));
            }
        }
    }
}

#[test]
fn fast_dropout_draws_the_reference_mask_bit_for_bit() {
    for isa in isas() {
        for (i, &(batch, input, rate)) in
            [(3, [8, 8, 32], 0.5f32), (2, [7, 5, 3], 0.25), (2, [1, 1, 10], 0.9), (2, [4, 4, 4], 0.0)]
                .iter()
                .enumerate()
        {
            let full = DropoutShape::new(batch, input.iter().product(), 3, rate, 42);
            let s = full.with_batch(batch - 1);
            let mut rng = Rng::new(400 + i as u64);
            let x = rng.tensor(s.len());
            for training in [Pass::Training { step: 7, first: 0 }, Pass::Inference] {
                for (x_pad, y_pad) in [(0, 0), (0, 1), (1, 0)] {
                    let what = format!("{isa:?} dropout {input:?} rate {rate} {training:?} pads {x_pad}/{y_pad}");
                    let plan = DropoutPlan::new(&full, isa, input, x_pad, y_pad);
                    let mut x_stored = vec![0.0; plan.x.len(batch)];
                    plan.x.pack(&mut x_stored, &x, batch - 1);
                    let mut expected = vec![f32::NAN; s.len()];
                    dropout::forward(&mut expected, &x, training, &s);
                    let mut y_stored = nan_buffer(&plan.y, batch);
                    fast_dropout::forward(&mut y_stored, &x_stored, training, &s, &plan);
                    let mut y = vec![f32::NAN; s.len()];
                    plan.y.unpack(&mut y, &y_stored, batch - 1);
                    assert_bits_equal(&y, &expected, &format!("{what}: forward"));

                    let mut expected_dx = vec![f32::NAN; s.len()];
                    dropout::backward_input(&mut expected_dx, &x, training, &s);
                    let mut dx = vec![f32::NAN; s.len()];
                    fast_dropout::backward_input(&mut dx, &x, training, &s, &plan);
                    assert_bits_equal(&dx, &expected_dx, &format!("{what}: backward_input"));
                }
            }
            if rate > 0.0 {
                let mut y = vec![0.0; s.len()];
                let pass = Pass::Training { step: 2, first: 0 };
                fast_dropout::forward(&mut y, &x, pass, &s, &DropoutPlan::new(&full, isa, input, 0, 0));
                assert!(y.contains(&0.0), "rate {rate}: nothing was dropped");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dense + softmax + cross-entropy, and Adam.

#[test]
fn fast_dense_softmax_matches_the_reference_forward_and_every_gradient() {
    for isa in isas() {
        for (i, &(batch, features, classes, l1)) in
            [(5, 2048, 10, 1e-3f32), (3, 105, 10, 0.0), (2, 7, 3, 0.5), (4, 33, 20, 1e-4), (1, 64, 70, 1e-2)]
                .iter()
                .enumerate()
        {
            let full = DenseShape::new(batch, features, classes, l1);
            let s = full.with_batch(batch.max(2) - 1);
            let nb = s.batch as usize;
            let what = format!("{isa:?} dense {features}→{classes} batch {nb}/{batch} λ {l1}");
            let mut rng = Rng::new(500 + i as u64);
            let x = rng.tensor(nb * features);
            let mut kernel = rng.tensor(features * classes);
            kernel[0] = 0.0; // sign(0) = 0
            let bias = rng.tensor(classes);
            let labels: Vec<u32> = (0..nb).map(|n| (n * 7 % classes) as u32).collect();
            let mut plan = DensePlan::new(&full, isa);

            let nan = |n: usize| vec![f32::NAN; n];
            let (mut probs, mut dlogits, mut losses, mut predicted) =
                (nan(nb * classes), nan(nb * classes), nan(nb), vec![u32::MAX; nb]);
            dense_softmax::forward(
                &mut probs,
                &mut dlogits,
                &mut losses,
                &mut predicted,
                &x,
                &kernel,
                &bias,
                &labels,
                &s,
            );
            let (mut f_probs, mut f_dlogits, mut f_losses, mut f_predicted) =
                (nan(nb * classes), nan(nb * classes), nan(nb), vec![u32::MAX; nb]);
            fast_dense::forward(
                &mut f_probs,
                &mut f_dlogits,
                &mut f_losses,
                &mut f_predicted,
                &x,
                &kernel,
                &bias,
                &labels,
                &s,
                &mut plan,
            );
            // Logits are sums of F products (F up to 2048): compare the probabilities.
            assert_close(&f_probs, &probs, 1e-5, 1e-4, &format!("{what}: probs"));
            assert_close(&f_losses, &losses, 1e-4, 1e-4, &format!("{what}: losses"));
            assert_close(&f_dlogits, &dlogits, 1e-5, 1e-4, &format!("{what}: dlogits"));
            assert_eq!(f_predicted, predicted, "{what}: predicted classes");

            // Backward from the reference's dlogits so both see the same input.
            let (mut dk, mut db) = (nan(features * classes), nan(classes));
            dense_softmax::backward_weight(&mut dk, &mut db, &dlogits, &x, &kernel, &s);
            let (mut f_dk, mut f_db) = (nan(features * classes), nan(classes));
            fast_dense::backward_weight(&mut f_dk, &mut f_db, &dlogits, &x, &kernel, &s, &plan);
            assert_close(&f_dk, &dk, 1e-6, 1e-5, &format!("{what}: dkernel"));
            assert_bits_equal(&f_db, &db, &format!("{what}: dbias (same order)"));

            let mut dx = nan(nb * features);
            dense_softmax::backward_input(&mut dx, &dlogits, &kernel, &s);
            let mut f_dx = nan(nb * features);
            fast_dense::backward_input(&mut f_dx, &dlogits, &kernel, &s, &mut plan);
            assert_close(&f_dx, &dx, 1e-6, 1e-5, &format!("{what}: backward_input"));
        }
    }
}

#[test]
fn fast_adam_equals_the_reference_bit_for_bit() {
    for isa in isas() {
        let count = 1003;
        let config = AdamConfig::default();
        let shape = config.shape(count);
        let mut rng = Rng::new(600);
        let (params, grads) = (rng.tensor(count), rng.tensor(count));
        let (mut p1, mut m1, mut v1) = (params.clone(), vec![0.0; count], vec![0.0; count]);
        let (mut p2, mut m2, mut v2) = (params.clone(), vec![0.0; count], vec![0.0; count]);
        for t in 1..=3 {
            adam::update(&mut p1, &mut m1, &mut v1, &grads, config.alpha(t), &shape);
            fast_adam::update(&mut p2, &mut m2, &mut v2, &grads, config.alpha(t), &shape, isa);
        }
        assert_bits_equal(&p2, &p1, &format!("{isa:?} adam params"));
        assert_bits_equal(&m2, &m1, &format!("{isa:?} adam m"));
        assert_bits_equal(&v2, &v1, &format!("{isa:?} adam v"));
    }
}

// ---------------------------------------------------------------------------------------------
// Whole training epochs.

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// One epoch of the training loop on `engine`: its raw metrics.
fn one_epoch(engine: &mut dyn Engine, train: &Dataset, config: &TrainConfig) -> RawMetrics {
    Trainer::new(engine, train, &Dataset::default(), config).unwrap().run_epoch().unwrap().1
}

fn options(isa: Isa, threads: usize) -> FastOptions {
    FastOptions { isa, threads, reference_only: false }
}

/// One epoch of `rows` images at `batch` (so the last batch is partial) on the reference and
/// the fast engine from the same weights: losses, penalties and parameters must agree.
fn fast_matches_reference(arch: &str, rows: usize, batch: usize, options: FastOptions) {
    let FastOptions { isa, threads, .. } = options;
    let model = Model::new(&Architecture::parse(arch).unwrap(), CIFAR_INPUT).unwrap();
    let train = cifar_sample().train.take_first(rows);
    let config = TrainConfig { batch_size: batch, l1: 1e-3, seed: 7, ..Default::default() };
    let initial = model.init(config.seed);

    let mut reference = ReferenceEngine::new(&model, &train, initial.clone(), &config).unwrap();
    let mut fast = FastCpuEngine::with_options(&model, &train, initial.clone(), &config, &options).unwrap();
    let expected = one_epoch(&mut reference, &train, &config);
    let actual = one_epoch(&mut fast, &train, &config);
    assert_eq!(actual.penalties.len(), expected.penalties.len());
    assert_eq!(actual.losses.len(), rows);

    // The GPU matches the reference to ≈ 3e-7 on these runs; so must we (bounds 30× that).
    let first = max_difference(&actual.losses[..batch], &expected.losses[..batch]);
    let all = max_difference(&actual.losses, &expected.losses);
    let penalties = max_difference(&actual.penalties, &expected.penalties);
    let (p_fast, p_reference) = (wait(fast.weights()).unwrap().params, wait(reference.weights()).unwrap().params);
    let (params, pre_norm_biases) = common::param_difference(&model, &p_fast, &p_reference);
    let moved = max_difference(&p_reference, &initial.params);
    let how = if options.reference_only { ", reference fallback" } else { "" };
    eprintln!("{arch} ({isa:?}, {threads} threads{how}): first-step losses Δ {first:e}, all losses Δ {all:e}, params Δ {params:e} (moved {moved:e}; biases before a batch norm Δ {pre_norm_biases:e})");
    assert!(first < 1e-5, "{arch}: first-step losses differ by {first}");
    assert!(all < 1e-4, "{arch}: losses differ by {all}");
    assert!(penalties < 1e-5, "{arch}: penalties differ by {penalties}");
    assert!(moved > 1e-3, "{arch}: training did not move the weights");
    assert!(params < 1e-5, "{arch}: parameters differ by {params} after {} steps", actual.penalties.len());
    let (s_fast, s_reference) = (wait(fast.weights()).unwrap().state, wait(reference.weights()).unwrap().state);
    let state = max_difference(&s_fast, &s_reference);
    // The moving means take in 1 % a step of the batch means, pre-norm biases included.
    assert!(state < 1e-4, "{arch}: moving statistics differ by {state}");
    assert_eq!(actual.predictions.len(), expected.predictions.len());

    let val = cifar_sample().test.take_first(13);
    let (val_fast, val_reference) = (fast.prepare(&val).unwrap(), reference.prepare(&val).unwrap());
    let (e, a) = (wait(reference.evaluate(val_reference)).unwrap(), wait(fast.evaluate(val_fast)).unwrap());
    assert_eq!(a.losses.len(), 13);
    // Inference normalises with the moving means, which hold only a few per cent of the pre-norm
    // biases' drift (see common::param_difference): that much of it shifts the outputs.
    let loose = pre_norm_biases > 1e-6;
    let eval = max_difference(&a.losses, &e.losses);
    assert!(eval < if loose { 2e-3 } else { 1e-4 }, "{arch}: evaluation losses differ by {eval}");
    let pa = wait(fast.probabilities(val_fast)).unwrap();
    let pe = wait(reference.probabilities(val_reference)).unwrap();
    let probabilities = max_difference(&pa, &pe);
    assert!(probabilities < if loose { 2e-3 } else { 1e-5 }, "{arch}: probabilities differ by {probabilities}");
}

#[test]
fn fast_training_matches_the_reference_on_the_base_net() {
    for isa in isas() {
        fast_matches_reference("base", 20, 8, options(isa, 1));
    }
}

#[test]
fn fast_training_matches_the_reference_with_max_pooling_and_dropout() {
    for isa in isas() {
        fast_matches_reference("maxpool", 20, 8, options(isa, 1));
    }
}

#[test]
fn fast_training_matches_the_reference_over_several_micro_batches_and_threads() {
    // Batch 20 = micro-batches of 8, 8 and 4 summed into one step; 44 rows = 20 + 20 + 4.
    for threads in [1, 2, 3] {
        fast_matches_reference("base", 44, 20, options(Isa::best(), threads));
        fast_matches_reference("maxpool", 60, 20, options(Isa::best(), threads));
    }
    // Not "maxpool" on 44 rows: there one of conv2d_2's 163,840 pre-activations is +5.0e-8 in
    // the reference and rounds to ≤ 0 here, so the ReLU passes that pixel's gradient in one and
    // not the other, and the first step's gradients differ by 3e-3 of their scale. Any two f32
    // summation orders (the GPU's too) can meet such a kink; these data have none.
}

#[test]
fn layers_without_fast_kernels_run_their_reference_inside_the_fast_engine() {
    // Every layer through the engine's fallback (what a newly registered layer without fast
    // kernels gets): padded neighbours, micro-batches, threads, dropout keyed per micro-batch.
    let fallback = FastOptions { isa: Isa::best(), threads: 2, reference_only: true };
    fast_matches_reference("maxpool", 20, 8, fallback);
    fast_matches_reference("d0.2,c8s2,p,c5,d0.3,c4s2,f10", 12, 8, fallback);
}

#[test]
fn fast_training_gives_the_same_bits_every_run_for_a_thread_count() {
    for arch in ["base", BN_NET] {
        same_bits_every_run(arch);
    }
}

fn same_bits_every_run(arch: &str) {
    let model = Model::new(&Architecture::parse(arch).unwrap(), CIFAR_INPUT).unwrap();
    let train = cifar_sample().train.take_first(40);
    let config = TrainConfig { batch_size: 40, ..Default::default() };
    let run = || {
        let mut fast =
            FastCpuEngine::with_options(&model, &train, model.init(3), &config, &options(Isa::best(), 2)).unwrap();
        let mut trainer = Trainer::new(&mut fast, &train, &Dataset::default(), &config).unwrap();
        trainer.run_epoch().unwrap();
        trainer.run_epoch().unwrap();
        drop(trainer);
        wait(fast.weights()).unwrap().params
    };
    assert_bits_equal(&run(), &run(), &format!("{arch}: two runs with 2 threads"));
}

#[test]
fn fast_training_matches_the_reference_on_the_deep_net_and_odd_architectures() {
    let isa = Isa::best();
    fast_matches_reference("deep", 12, 8, options(isa, 1));
    // Dropout first and in the middle, pooling after dropout, a conv on a pooled odd size.
    fast_matches_reference("d0.2,c8s2,p,c5,d0.3,c4s2,f10", 12, 8, options(isa, 1));
}

/// The layers of the assignment's script's imports: convolutions without activation, batch
/// normalisation, ReLU and LeakyReLU layers, a hidden dense layer with dropout after it.
const BN_NET: &str = "c8n,bn,lrelu,c8s2n,bn,relu,p,h24,d0.3,f10";

#[test]
fn fast_training_matches_the_reference_with_batch_norm_activations_and_hidden_dense_layers() {
    for isa in isas() {
        // Batch 8 with a partial last batch: one pass of the whole batch, layer by layer, each
        // layer but the batch norms split between the threads.
        fast_matches_reference(BN_NET, 20, 8, options(isa, 1));
    }
    for threads in [2, 3] {
        fast_matches_reference(BN_NET, 44, 20, options(Isa::best(), threads));
    }
    fast_matches_reference("bn,c4s2,lrelu0.1,bn,h7n,relu,f10", 12, 8, options(Isa::best(), 1));
    let fallback = FastOptions { isa: Isa::best(), threads: 2, reference_only: true };
    fast_matches_reference(BN_NET, 20, 8, fallback);
}

// ---------------------------------------------------------------------------------------------
// No allocation inside the step.

/// Counts the heap allocations of the calling thread across three steps (full and partial
/// batches), on every instruction set and with two threads. With two threads the workers run
/// the same `micro_batch` code on rayon's threads (not counted here; rayon's join keeps its jobs
/// on the stack); the buffers they use are the ones `buffer_capacity` sums, checked unchanged.
#[test]
fn a_training_step_allocates_nothing() {
    let train: Dataset = cifar_sample().train.take_first(24);
    let config = TrainConfig { batch_size: 16, ..Default::default() };
    let cases = isas().into_iter().map(|isa| ("maxpool", isa, 1)).chain([
        ("maxpool", Isa::best(), 2),
        (BN_NET, Isa::best(), 1),
        (BN_NET, Isa::best(), 2),
    ]);
    for (arch, isa, threads) in cases {
        let model = Model::new(&Architecture::parse(arch).unwrap(), CIFAR_INPUT).unwrap();
        let mut fast =
            FastCpuEngine::with_options(&model, &train, model.init(1), &config, &options(isa, threads)).unwrap();
        let capacity = fast.buffer_capacity();
        // A full batch, a partial one, a full one again.
        let order: Vec<u32> = (0..24).chain(0..16).collect();
        fast.begin_epoch(&order).unwrap();
        let steps = [(0, 0, 16), (1, 16, 8), (2, 24, 16)];
        let before = allocations();
        for (batch, start, len) in steps {
            let t = batch as u64 + 1;
            fast.train_step(&Step { batch, start, len, t, alpha: config.adam().alpha(t) }).unwrap();
        }
        let made = allocations() - before;
        eprintln!("{arch}, {isa:?}, {threads} threads: {made} allocations in three steps");
        assert_eq!(made, 0, "{arch}, {isa:?}, {threads} threads: three training steps made {made} heap allocations");
        assert_eq!(fast.buffer_capacity(), capacity, "{isa:?}: buffers grew");
        assert!(wait(fast.epoch_metrics()).unwrap().losses[..8].iter().all(|l| l.is_finite()));
    }
}

#[test]
fn describe_names_the_instruction_set_and_threads() {
    let model = Model::new(&Architecture::parse("base").unwrap(), CIFAR_INPUT).unwrap();
    let train = cifar_sample().train.take_first(4);
    let fast = FastCpuEngine::new(&model, &train, model.init(1), &TrainConfig::default()).unwrap();
    let text = fast.describe();
    assert!(text.starts_with("CPU fast (") && text.contains("thread"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Timing reports (not tests), in one run so that the ratios mean something on a shared machine:
// `cargo test --release --test fast_cpu -- --ignored --nocapture --test-threads 1`.
// Environment: FAST_ARCHS (default "base,maxpool,deep"), FAST_ISA (avx512, avx2, portable),
// RAYON_NUM_THREADS, FAST_SKIP_REFERENCE=1 (the reference takes ~0.6 s a step), FAST_BATCH
// (layer report; 128 by default).

/// Training and inference images/s of whole epochs of 512 images at batch 128, fast vs the
/// reference (one step of it).
#[test]
#[ignore]
fn report_training_and_inference_speed() {
    use std::time::Instant;
    let rows = 512;
    let train = cifar_sample().train.take_first(rows);
    let config = TrainConfig { batch_size: 128, ..Default::default() };
    let archs = std::env::var("FAST_ARCHS").unwrap_or_else(|_| "base,maxpool,deep".to_string());
    let isa = std::env::var("FAST_ISA").ok().map_or_else(Isa::best, |name| Isa::named(&name).expect("FAST_ISA"));
    let threads = wgpu_cnn::train::fast::threads_from_env();
    for arch in archs.split(',') {
        let model = Model::new(&Architecture::parse(arch).unwrap(), CIFAR_INPUT).unwrap();
        let weights = model.init(1);
        let mut fast =
            FastCpuEngine::with_options(&model, &train, weights.clone(), &config, &options(isa, threads)).unwrap();
        let describe = fast.describe();
        let mut trainer = Trainer::new(&mut fast, &train, &Dataset::default(), &config).unwrap();
        trainer.run_epoch().unwrap();
        let epochs = 4;
        let start = Instant::now();
        for _ in 0..epochs {
            trainer.run_epoch().unwrap();
        }
        let train_rate = (epochs * rows) as f64 / start.elapsed().as_secs_f64();
        drop(trainer);
        let id = fast.prepare(&train).unwrap();
        let start = Instant::now();
        for _ in 0..epochs {
            wait(fast.evaluate(id)).unwrap();
        }
        let infer_rate = (epochs * rows) as f64 / start.elapsed().as_secs_f64();
        let reference = if std::env::var("FAST_SKIP_REFERENCE").is_ok() {
            String::new()
        } else {
            let one = train.take_first(128);
            let mut reference = ReferenceEngine::new(&model, &one, weights, &config).unwrap();
            let start = Instant::now();
            one_epoch(&mut reference, &one, &config);
            let rate = 128.0 / start.elapsed().as_secs_f64();
            format!("; reference training {rate:.0} img/s ({:.1}× faster)", train_rate / rate)
        };
        eprintln!("{arch}: {describe} training {train_rate:.0} img/s, inference {infer_rate:.0} img/s{reference}");
    }
}

/// Each pass of each base-net convolution on a whole batch (no micro-batching), in ms and
/// GFLOP/s (2 flops per multiply-add of the forward pass; the input gradient of the first layer
/// is not needed in training).
#[test]
#[ignore]
fn report_layer_speed() {
    use std::time::Instant;
    let batch: usize = std::env::var("FAST_BATCH").map(|b| b.parse().unwrap()).unwrap_or(128);
    let isa = std::env::var("FAST_ISA").ok().map_or_else(Isa::best, |name| Isa::named(&name).expect("FAST_ISA"));
    let time = |f: &mut dyn FnMut()| {
        f();
        let reps = (2560 / batch).max(1);
        let start = Instant::now();
        for _ in 0..reps {
            f();
        }
        start.elapsed().as_secs_f64() / reps as f64
    };
    let mut total = 0.0;
    for (input, filters, stride) in
        [([32, 32, 3], 16, 1), ([32, 32, 16], 16, 2), ([16, 16, 16], 32, 1), ([16, 16, 32], 32, 2)]
    {
        let s = Conv2dShape::new(batch, input, filters, stride);
        let mut plan = ConvPlan::new(&s, isa, 1);
        let mut rng = Rng::new(1);
        let x = rng.tensor(s.input_len());
        let mut x_stored = plan.x.zeros(batch);
        plan.x.pack(&mut x_stored, &x, batch);
        let (kernel, bias, dy) = (rng.tensor(s.kernel_len()), rng.tensor(filters), rng.tensor(s.output_len()));
        let (mut y, mut dpre, mut dx) = (plan.y.zeros(batch), plan.dpre.zeros(batch), plan.dx.zeros(batch));
        let (mut dk, mut db) = (vec![0.0; s.kernel_len()], vec![0.0; filters]);
        let flops = 2.0 * (s.output_len() * 9 * input[2]) as f64;
        let f = time(&mut || fast_conv::forward(&mut y, &x_stored, &kernel, &bias, &s, &mut plan));
        let r = time(&mut || fast_conv::relu_backward(&mut dpre, &dy, &y, &s, &plan));
        let bi = time(&mut || fast_conv::backward_input(&mut dx, &dpre, &kernel, &s, &mut plan));
        let bw = time(&mut || fast_conv::backward_weight(&mut dk, &mut db, &dpre, &x_stored, &s, &plan));
        total += f + r + bi + bw;
        eprintln!(
            "{input:?}→{filters} s{stride}: forward {:.2} ms ({:.0} GFLOP/s), relu' {:.2} ms, dx {:.2} ms ({:.0}), dW {:.2} ms ({:.0})",
            f * 1e3,
            flops / f / 1e9,
            r * 1e3,
            bi * 1e3,
            flops / bi / 1e9,
            bw * 1e3,
            flops / bw / 1e9
        );
    }
    eprintln!("conv total {:.2} ms per batch of {batch} ({isa})", total * 1e3);
}
