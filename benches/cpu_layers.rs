//! The fast CPU layers against the plain-loop references, at batch 128 on the base net's layers
//! (each convolution's forward and backward, dropout, dense + softmax), then a whole training
//! step of the base net: `ReferenceEngine` vs `FastCpuEngine` on one thread and on the default
//! thread count. Compare the rows as ratios within one run: this machine's timings drift.
//!
//! The layer rows run a whole batch through one layer (`ConvPlan` built for 128 images); the
//! engine runs its step in micro-batches, so its time is less than the sum of the layer rows.
//!
//! `cargo bench --bench cpu_layers`; `wgpu-cnn bench train` prints images/s of whole epochs.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_cnn::data::{self, Dataset};
use wgpu_cnn::fast::Isa;
use wgpu_cnn::layers::conv2d::fast::{self as fast_conv, ConvPlan};
use wgpu_cnn::layers::conv2d::{self, Conv2dShape};
use wgpu_cnn::layers::dense_softmax::fast::{self as fast_dense, DensePlan};
use wgpu_cnn::layers::dense_softmax::{self, DenseShape};
use wgpu_cnn::layers::dropout::fast::{self as fast_dropout, DropoutPlan};
use wgpu_cnn::layers::dropout::{self, DropoutShape};
use wgpu_cnn::layers::Pass;
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::train::fast::{default_threads, FastCpuEngine, FastOptions};
use wgpu_cnn::train::reference::ReferenceEngine;
use wgpu_cnn::train::{wait, Inference, TrainConfig, Trainer};

const BATCH: usize = 128;

/// Deterministic values in [-1, 1).
fn tensor(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn conv_layers(c: &mut Criterion) {
    let isa = Isa::best();
    let mut group = c.benchmark_group("cpu_conv2d_base_layers_batch128");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (i, (input, filters, stride)) in
        [([32, 32, 3], 16, 1), ([32, 32, 16], 16, 2), ([16, 16, 16], 32, 1), ([16, 16, 32], 32, 2)]
            .into_iter()
            .enumerate()
    {
        let s = Conv2dShape::new(BATCH, input, filters, stride);
        let layer = format!("{}x{}x{}_to_{filters}_s{stride}", input[0], input[1], input[2]);
        let (x, kernel, bias, dy) =
            (tensor(s.input_len(), 1), tensor(s.kernel_len(), 2), tensor(filters, 3), tensor(s.output_len(), 4));
        let mut y = vec![0.0; s.output_len()];
        conv2d::forward(&mut y, &x, &kernel, &bias, &s);
        let (mut dx, mut dkernel, mut dbias) =
            (vec![0.0; s.input_len()], vec![0.0; s.kernel_len()], vec![0.0; filters]);
        // The first layer's input gradient is not needed in training: neither side computes it.
        let needs_dx = i > 0;
        group.throughput(Throughput::Elements((s.output_len() * 9 * input[2]) as u64));

        group.bench_function(BenchmarkId::new("forward_reference", &layer), |b| {
            b.iter(|| conv2d::forward(&mut y, &x, &kernel, &bias, &s))
        });
        group.bench_function(BenchmarkId::new("backward_reference", &layer), |b| {
            b.iter(|| {
                if needs_dx {
                    conv2d::backward_input(&mut dx, &dy, &y, &kernel, &s);
                }
                conv2d::backward_weight(&mut dkernel, &mut dbias, &dy, &y, &x, &s);
            })
        });

        let mut plan = ConvPlan::new(&s, isa, 0);
        let mut x_stored = plan.x.zeros(BATCH);
        plan.x.pack(&mut x_stored, &x, BATCH);
        let mut y_fast = plan.y.zeros(BATCH);
        let mut dpre = plan.dpre.zeros(BATCH);
        group.bench_function(BenchmarkId::new(format!("forward_fast_{}", isa.name()), &layer), |b| {
            b.iter(|| fast_conv::forward(&mut y_fast, &x_stored, &kernel, &bias, &s, &mut plan))
        });
        group.bench_function(BenchmarkId::new(format!("backward_fast_{}", isa.name()), &layer), |b| {
            b.iter(|| {
                fast_conv::relu_backward(&mut dpre, &dy, &y_fast, &s, &plan);
                if needs_dx {
                    fast_conv::backward_input(&mut dx, &dpre, &kernel, &s, &mut plan);
                }
                fast_conv::backward_weight(&mut dkernel, &mut dbias, &dpre, &x_stored, &s, &plan);
            })
        });
    }
    group.finish();
}

fn dropout_and_dense(c: &mut Criterion) {
    let isa = Isa::best();
    let mut group = c.benchmark_group("cpu_dropout_dense_base_batch128");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let sample = [8, 8, 32];
    let features = 8 * 8 * 32;
    let s = DropoutShape::new(BATCH, features, 4, 0.5, 42);
    let plan = DropoutPlan::new(&s, isa, sample, 0, 0);
    let x = tensor(s.len(), 5);
    let mut y = vec![0.0; s.len()];
    let training = Pass::Training { step: 7, first: 0 };
    group.bench_function("dropout_forward_backward_reference", |b| {
        b.iter(|| {
            dropout::forward(&mut y, &x, training, &s);
            dropout::backward_input(&mut y, &x, training, &s);
        })
    });
    group.bench_function(format!("dropout_forward_backward_fast_{}", isa.name()), |b| {
        b.iter(|| {
            fast_dropout::forward(&mut y, &x, training, &s, &plan);
            fast_dropout::backward_input(&mut y, &x, training, &s, &plan);
        })
    });

    let d = DenseShape::new(BATCH, features, 10, 1e-4);
    let (kernel, bias) = (tensor(d.kernel_len(), 6), tensor(10, 7));
    let labels: Vec<u32> = (0..BATCH as u32).map(|n| n % 10).collect();
    let (mut probs, mut dlogits, mut losses, mut predicted) =
        (vec![0.0; BATCH * 10], vec![0.0; BATCH * 10], vec![0.0; BATCH], vec![0; BATCH]);
    let (mut dkernel, mut dbias, mut dx) = (vec![0.0; d.kernel_len()], vec![0.0; 10], vec![0.0; BATCH * features]);
    group.bench_function("dense_softmax_forward_backward_reference", |b| {
        b.iter(|| {
            dense_softmax::forward(
                &mut probs,
                &mut dlogits,
                &mut losses,
                &mut predicted,
                &x,
                &kernel,
                &bias,
                &labels,
                &d,
            );
            dense_softmax::backward_weight(&mut dkernel, &mut dbias, &dlogits, &x, &kernel, &d);
            dense_softmax::backward_input(&mut dx, &dlogits, &kernel, &d);
        })
    });
    let mut dense_plan = DensePlan::new(&d, isa);
    group.bench_function(format!("dense_softmax_forward_backward_fast_{}", isa.name()), |b| {
        b.iter(|| {
            fast_dense::forward(
                &mut probs,
                &mut dlogits,
                &mut losses,
                &mut predicted,
                &x,
                &kernel,
                &bias,
                &labels,
                &d,
                &mut dense_plan,
            );
            fast_dense::backward_weight(&mut dkernel, &mut dbias, &dlogits, &x, &kernel, &d, &dense_plan);
            fast_dense::backward_input(&mut dx, &dlogits, &kernel, &d, &mut dense_plan);
        })
    });
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let model = Model::new(&Architecture::parse("base").unwrap(), CIFAR_INPUT).unwrap();
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/cifar10");
    let batch = data::load_dir(&folder).expect("the CIFAR-10 subset in assets/").train.take_first(BATCH);
    let config = TrainConfig { batch_size: BATCH, ..Default::default() };
    let weights = model.init(1);
    let mut group = c.benchmark_group("cpu_train_step_base_batch128");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut reference = ReferenceEngine::new(&model, &batch, weights.clone(), &config).unwrap();
    let mut trainer = Trainer::new(&mut reference, &batch, &Dataset::default(), &config).unwrap();
    group.bench_function("reference", |b| b.iter(|| trainer.run_epoch().unwrap()));
    let mut threads = vec![1];
    if default_threads() > 1 {
        threads.push(default_threads());
    }
    for threads in threads {
        let options = FastOptions { isa: Isa::best(), threads, reference_only: false };
        let mut fast = FastCpuEngine::with_options(&model, &batch, weights.clone(), &config, &options).unwrap();
        let s = if threads == 1 { "" } else { "s" };
        let mut trainer = Trainer::new(&mut fast, &batch, &Dataset::default(), &config).unwrap();
        group.bench_function(format!("fast_{}_{threads}_thread{s}", Isa::best().name()), |b| {
            b.iter(|| trainer.run_epoch().unwrap())
        });
        drop(trainer);
        let id = fast.prepare(&batch).unwrap();
        group.bench_function(format!("fast_inference_{threads}_thread{s}"), |b| {
            b.iter(|| wait(fast.evaluate(id)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, conv_layers, dropout_and_dense, train_step);
criterion_main!(benches);
