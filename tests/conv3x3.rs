//! Part I: the 3×3 convolution. Known answers worked out by hand, then the GPU and the fast CPU
//! path against the CPU reference, bit for bit, on many shapes and kernels.

mod common;

use common::{gpu, Rng};
use proptest::prelude::*;
use wgpu_cnn::filter::{cpu, Conv3x3, Kernel3x3, Plane};
use wgpu_cnn::Error;

fn plane(rows: &[&[u8]]) -> Plane {
    Plane::new(rows[0].len() as u32, rows.len() as u32, rows.concat()).unwrap()
}

fn random_plane(rng: &mut Rng, width: u32, height: u32) -> Plane {
    Plane::new(width, height, rng.bytes(width as usize * height as usize)).unwrap()
}

fn run_gpu(input: &Plane, kernel: &Kernel3x3) -> Option<Plane> {
    let ctx = gpu()?;
    let conv = Conv3x3::new(&ctx.device).unwrap();
    Some(conv.run(&ctx.device, &ctx.queue, input, kernel).unwrap())
}

/// Fails with the first differing pixels and the largest difference.
fn assert_planes_equal(actual: &Plane, expected: &Plane, what: &str) {
    assert_eq!((actual.width, actual.height), (expected.width, expected.height), "{what}: size");
    let mismatches: Vec<String> = (0..expected.pixels.len())
        .filter(|&i| actual.pixels[i] != expected.pixels[i])
        .take(5)
        .map(|i| {
            let (y, x) = (i / expected.width as usize, i % expected.width as usize);
            format!("(y={y}, x={x}): got {}, expected {}", actual.pixels[i], expected.pixels[i])
        })
        .collect();
    let max = actual.pixels.iter().zip(&expected.pixels).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
    assert!(
        mismatches.is_empty(),
        "{what} {}×{}: max difference {max}; first mismatches: {}",
        expected.width,
        expected.height,
        mismatches.join("; ")
    );
}

/// The GPU, the fast CPU path and the reference give the same bits.
fn check_all_agree(input: &Plane, kernel: &Kernel3x3) {
    let reference = cpu::conv3x3_reference(input, kernel);
    assert_planes_equal(&cpu::conv3x3_fast(input, kernel), &reference, &format!("CPU fast, kernel {kernel}"));
    if let Some(out) = run_gpu(input, kernel) {
        assert_planes_equal(&out, &reference, &format!("GPU, kernel {kernel}"));
    }
}

#[test]
fn the_assignments_vertical_edge_example_gives_the_hand_computed_output() {
    // Five rows of 10,10,10,0,0,0 and the kernel [[1,0,-1]] * 3. With one pixel of zero padding,
    // a row of taps contributes left - right: x=0: 0-10, x=1: 10-10, x=2: 10-0, x=3: 10-0, x=4,5: 0.
    // Inner rows see three such rows, the top and bottom rows two; negatives clip to 0.
    let row: &[u8] = &[10, 10, 10, 0, 0, 0];
    let input = plane(&[row; 5]);
    let kernel = Kernel3x3::parse("1,0,-1;1,0,-1;1,0,-1").unwrap();
    let expected = plane(&[
        &[0, 0, 20, 20, 0, 0],
        &[0, 0, 30, 30, 0, 0],
        &[0, 0, 30, 30, 0, 0],
        &[0, 0, 30, 30, 0, 0],
        &[0, 0, 20, 20, 0, 0],
    ]);
    assert_planes_equal(&cpu::conv3x3_reference(&input, &kernel), &expected, "CPU reference");
    assert_planes_equal(&cpu::conv3x3_fast(&input, &kernel), &expected, "CPU fast");
    if let Some(out) = run_gpu(&input, &kernel) {
        assert_planes_equal(&out, &expected, "GPU");
    }
}

#[test]
fn the_kernel_is_not_flipped() {
    // A single bright pixel under a kernel with one off-centre weight: cross-correlation moves
    // the pixel to the opposite side of the weight (convolution would move it the same way).
    let mut input = Plane::zeros(3, 3).unwrap();
    input.pixels[4] = 100;
    let kernel = Kernel3x3::parse("0,0,0;0,0,1;0,0,0").unwrap(); // weight at (y, x+1)
    let expected = plane(&[&[0, 0, 0], &[100, 0, 0], &[0, 0, 0]]);
    assert_planes_equal(&cpu::conv3x3_reference(&input, &kernel), &expected, "CPU reference");
    check_all_agree(&input, &kernel);
}

#[test]
fn fractional_kernels_clip_then_truncate_toward_zero() {
    // All weights 1/8 on a plane of 10s: 9 taps inside (11.25 -> 11), 6 on edges (7.5 -> 7),
    // 4 in corners (5). Dyadic weights keep every f32 sum exact, so GPU = CPU bit for bit.
    let row: &[u8] = &[10; 4];
    let input = plane(&[row; 3]);
    let kernel = Kernel3x3::new([[0.125; 3]; 3]);
    let expected = plane(&[&[5, 7, 7, 5], &[7, 11, 11, 7], &[5, 7, 7, 5]]);
    assert_planes_equal(&cpu::conv3x3_reference(&input, &kernel), &expected, "CPU reference");
    check_all_agree(&input, &kernel);
    // A negative fraction clips to 0, never wraps.
    let negative = Kernel3x3::new([[0.0; 3], [0.0, -0.5, 0.0], [0.0; 3]]);
    assert!(cpu::conv3x3_reference(&input, &negative).pixels.iter().all(|&p| p == 0));
    check_all_agree(&input, &negative);
}

#[test]
fn gpu_matches_cpu_reference_bit_for_bit_on_edge_case_shapes() {
    let mut rng = Rng::new(7);
    let shapes =
        [(1, 1), (1, 17), (17, 1), (2, 2), (3, 5), (4, 4), (5, 4), (7, 13), (97, 89), (256, 1), (1, 300), (451, 300)];
    for &(w, h) in &shapes {
        let input = random_plane(&mut rng, w, h);
        check_all_agree(&input, &Kernel3x3::K1);
        check_all_agree(&input, &Kernel3x3::K2);
    }
}

#[test]
fn gpu_matches_cpu_reference_on_a_4096_square_image() {
    let mut rng = Rng::new(4096);
    let input = random_plane(&mut rng, 4096, 4096);
    check_all_agree(&input, &Kernel3x3::K1);
}

#[test]
fn gpu_matches_cpu_reference_on_an_8192_square_image() {
    // 64 MiB of pixels: 16.7 M output words, more than 65,535 workgroups of 256 in one
    // dimension, so this exercises the 2-D grid.
    // Where GPU tests are skipped (the other CPU targets' runs) there is nothing to compare: the
    // reference is not computed either (128 MiB of planes, in the run where Node's WASI once
    // crashed with SIGSEGV).
    let mut rng = Rng::new(8192);
    let input = random_plane(&mut rng, 8192, 8192);
    let Some(out) = run_gpu(&input, &Kernel3x3::K2) else { return };
    let reference = cpu::conv3x3_reference(&input, &Kernel3x3::K2);
    assert_planes_equal(&out, &reference, "GPU at 8192×8192");
}

#[test]
fn saturating_integer_kernels_clip_at_both_ends_identically() {
    let mut rng = Rng::new(99);
    let input = random_plane(&mut rng, 61, 37);
    let (mut saw_zero, mut saw_full) = (false, false);
    for kernel in [
        Kernel3x3::new([
            [100_000.0, -100_000.0, 100_000.0],
            [-100_000.0, 100_000.0, -100_000.0],
            [100_000.0, -100_000.0, 100_000.0],
        ]),
        Kernel3x3::new([[-900_000.0; 3]; 3]),
        Kernel3x3::new([[935_000.0, 0.0, 0.0], [0.0; 3], [0.0; 3]]),
    ] {
        assert!(kernel.integer_weights().is_some(), "{kernel} should take the exact integer path");
        let out = cpu::conv3x3_reference(&input, &kernel);
        saw_zero |= out.pixels.contains(&0);
        saw_full |= out.pixels.contains(&255);
        check_all_agree(&input, &kernel);
    }
    assert!(saw_zero && saw_full, "these kernels should saturate at 0 and at 255");
}

#[test]
fn gpu_agrees_within_one_grey_level_on_arbitrary_fractional_kernels() {
    let Some(ctx) = gpu() else { return };
    let conv = Conv3x3::new(&ctx.device).unwrap();
    let mut rng = Rng::new(3);
    for _ in 0..8 {
        let input = random_plane(&mut rng, 33, 21);
        let mut weights = [[0.0f32; 3]; 3];
        for row in &mut weights {
            for w in row.iter_mut() {
                *w = rng.range(-3000, 3000) as f32 / 997.0;
            }
        }
        let kernel = Kernel3x3::new(weights);
        let reference = cpu::conv3x3_reference(&input, &kernel);
        let out = conv.run(&ctx.device, &ctx.queue, &input, &kernel).unwrap();
        let max = out.pixels.iter().zip(&reference.pixels).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(max <= 1, "kernel {kernel}: GPU differs from CPU by {max} grey levels");
        assert_planes_equal(&cpu::conv3x3_fast(&input, &kernel), &reference, "CPU fast (same f32 order)");
    }
}

#[test]
fn large_integer_weights_beyond_i32_take_the_float_path() {
    let kernel = Kernel3x3::new([[10_000_000.0, 0.0, 0.0], [0.0; 3], [0.0; 3]]);
    assert!(kernel.integer_weights().is_none());
    assert!(Kernel3x3::K1.integer_weights().is_some());
    assert!(Kernel3x3::new([[0.5; 3]; 3]).integer_weights().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn gpu_and_fast_cpu_equal_the_reference_for_random_images_and_integer_kernels(
        width in 1u32..70, height in 1u32..40, seed in any::<u64>(),
        weights in proptest::array::uniform9(-1000i32..1000),
    ) {
        let mut rng = Rng::new(seed);
        let input = random_plane(&mut rng, width, height);
        let kernel = Kernel3x3::new([
            [weights[0] as f32, weights[1] as f32, weights[2] as f32],
            [weights[3] as f32, weights[4] as f32, weights[5] as f32],
            [weights[6] as f32, weights[7] as f32, weights[8] as f32],
        ]);
        check_all_agree(&input, &kernel);
    }

    #[test]
    fn gpu_equals_the_reference_for_dyadic_fractional_kernels(
        width in 1u32..50, height in 1u32..30, seed in any::<u64>(),
        eighths in proptest::array::uniform9(-64i32..64),
    ) {
        // Multiples of 1/8 up to ±8: every product and partial sum is exact in f32, so even a
        // driver that fuses multiply-adds must give the reference's bits.
        let mut rng = Rng::new(seed);
        let input = random_plane(&mut rng, width, height);
        let w = |i: usize| eighths[i] as f32 / 8.0;
        let kernel = Kernel3x3::new([[w(0), w(1), w(2)], [w(3), w(4), w(5)], [w(6), w(7), w(8)]]);
        check_all_agree(&input, &kernel);
    }
}

#[test]
fn an_image_larger_than_the_device_allows_is_a_clear_error() {
    let Some(ctx) = gpu() else { return };
    let limit = ctx.device.limits().max_storage_buffer_binding_size;
    // The smallest square whose plane exceeds one storage binding.
    let side = ((limit as f64).sqrt() as u32) + 1;
    let err = Conv3x3::check_fits(&ctx.device, side, side).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("{side}×{side}")) && message.contains(&limit.to_string()), "{message}");
}

#[test]
fn mismatched_buffers_are_rejected_before_dispatch() {
    let Some(ctx) = gpu() else { return };
    let conv = Conv3x3::new(&ctx.device).unwrap();
    let small = wgpu_cnn::gpu::storage_buffer(&ctx.device, "small", 8).unwrap();
    let big = wgpu_cnn::gpu::storage_buffer(&ctx.device, "big", 64).unwrap();
    let err = conv.prepare(&ctx.device, &small, &big, 4, 4, &Kernel3x3::K1).unwrap_err();
    assert!(err.to_string().contains("input buffer holds 8 bytes"), "{err}");
    let err = conv.prepare(&ctx.device, &big, &big, 0, 4, &Kernel3x3::K1).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn bad_kernel_strings_are_rejected_with_the_reason() {
    for (text, reason) in [
        ("1,2,3;4,5,6", "found 2 row(s)"),
        ("1,2,3;4,5,6;7,8", "row 3 has 2 value(s)"),
        ("1,2,3;4,x,6;7,8,9", "'x' in row 2 is not a number"),
        ("1,2,3;4,inf,6;7,8,9", "not finite"),
        ("1,2,3;4,NaN,6;7,8,9", "not finite"),
        ("", "it is empty"),
        ("laplace", "not a kernel name, nor numbers"),
        ("5", "found 1 row(s)"),
    ] {
        let message = Kernel3x3::parse(text).unwrap_err().to_string();
        assert!(message.contains(reason), "'{text}': {message}");
        assert!(message.contains("k1, k2"), "the message should list the kernel names: {message}");
    }
    assert_eq!(Kernel3x3::parse(" -1,-1,-1 ; -1,8,-1 ; -1,-1,-1 ").unwrap(), Kernel3x3::K1);
    assert_eq!(Kernel3x3::parse("K2").unwrap(), Kernel3x3::K2);
}

#[test]
fn planes_reject_empty_and_mismatched_sizes() {
    assert!(Plane::new(0, 5, vec![]).unwrap_err().to_string().contains("0×5"));
    assert!(Plane::new(2, 2, vec![0; 3]).unwrap_err().to_string().contains("needs 4 pixels, got 3"));
}

#[test]
fn the_texture_convolution_matches_the_cpu_reference_on_every_format_and_mode() {
    let Some(ctx) = gpu() else { return };
    let checks = wgpu_cnn::selftest::conv3x3_texture(ctx).unwrap();
    assert!(checks.len() >= 27, "{} checks", checks.len());
    for check in &checks {
        assert!(check.passed(), "{check}");
    }
}

#[test]
fn a_large_texture_is_convolved_exactly_like_its_planes() {
    use wgpu_cnn::filter::texture::{self, Conv3x3Texture, TextureChannels};
    let Some(ctx) = gpu() else { return };
    let (width, height) = (1031, 517);
    let mut rng = Rng::new(21);
    let rgba = rng.bytes(4 * width as usize * height as usize);
    let input = wgpu_cnn::selftest::texture_with(
        ctx,
        wgpu::TextureFormat::Rgba8Unorm,
        (width, height),
        &rgba,
        wgpu::TextureUsages::empty(),
    );
    let output = wgpu_cnn::selftest::texture_with(
        ctx,
        wgpu::TextureFormat::Rgba8Unorm,
        (width, height),
        &vec![7; rgba.len()],
        wgpu::TextureUsages::STORAGE_BINDING,
    );
    let conv = Conv3x3Texture::new(&ctx.device).unwrap();
    let dispatch = conv
        .prepare(
            &ctx.device,
            &input.create_view(&Default::default()),
            &output.create_view(&Default::default()),
            &Kernel3x3::K1,
            TextureChannels::All,
        )
        .unwrap();
    assert!(dispatch.is_exact());
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    dispatch.encode(&mut encoder);
    ctx.queue.submit([encoder.finish()]);
    let got = wgpu_cnn::gpu::read_texture(&ctx.device, &ctx.queue, &output).unwrap();
    let expected = texture::reference(&rgba, width, height, &Kernel3x3::K1, TextureChannels::All).unwrap();
    let first = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first, None, "first differing byte");
}

#[test]
fn the_texture_convolution_refuses_textures_it_cannot_use() {
    use wgpu::TextureFormat::{Bgra8Unorm, R8Unorm, Rgba16Float, Rgba8Unorm};
    use wgpu_cnn::filter::texture::{Conv3x3Texture, TextureChannels};
    use wgpu_cnn::selftest::texture_with;
    let Some(ctx) = gpu() else { return };
    let conv = Conv3x3Texture::new(&ctx.device).unwrap();
    let make = |format, size: (u32, u32), usage| {
        let bytes = vec![0u8; (format_bytes(format) * size.0 * size.1) as usize];
        texture_with(ctx, format, size, &bytes, usage)
    };
    fn format_bytes(format: wgpu::TextureFormat) -> u32 {
        format.block_copy_size(None).unwrap()
    }
    let storage = wgpu::TextureUsages::STORAGE_BINDING;
    let view = |t: &wgpu::Texture| t.create_view(&Default::default());
    let attempt = |input: &wgpu::Texture, output: &wgpu::Texture, channels| {
        conv.prepare(&ctx.device, &view(input), &view(output), &Kernel3x3::K1, channels).unwrap_err().to_string()
    };
    let (input, output) = (make(Rgba8Unorm, (8, 8), wgpu::TextureUsages::empty()), make(Rgba8Unorm, (8, 8), storage));
    let message = attempt(&make(R8Unorm, (8, 8), wgpu::TextureUsages::empty()), &output, TextureChannels::All);
    assert!(message.contains("R8Unorm") && message.contains("Rgba8Unorm or Bgra8Unorm"), "{message}");
    let message = attempt(&input, &make(Rgba8Unorm, (8, 9), storage), TextureChannels::All);
    assert!(message.contains("(8, 8)") && message.contains("(8, 9)"), "{message}");
    let message = attempt(&input, &make(Rgba16Float, (8, 8), storage), TextureChannels::All);
    assert!(message.contains("Rgba16Float"), "{message}");
    let message = attempt(&input, &make(Rgba8Unorm, (8, 8), wgpu::TextureUsages::empty()), TextureChannels::All);
    assert!(message.contains("STORAGE_BINDING"), "{message}");
    let message = attempt(&output, &output, TextureChannels::All);
    assert!(message.contains("same texture"), "{message}");
    let message = attempt(&input, &output, TextureChannels::One(3));
    assert!(message.contains("channel 3"), "{message}");

    // A device created without BGRA8UNORM_STORAGE: a Bgra8Unorm output names the feature.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    let bare = wgpu_cnn::gpu::GpuContext::from_device(&device, &queue);
    let conv = Conv3x3Texture::new(&device).unwrap();
    let input = texture_with(&bare, Rgba8Unorm, (4, 4), &[0; 64], wgpu::TextureUsages::empty());
    let output = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d { width: 4, height: 4, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: Bgra8Unorm,
        usage: wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: &[],
    });
    let message = conv
        .prepare(&device, &view(&input), &view(&output), &Kernel3x3::K1, TextureChannels::All)
        .unwrap_err()
        .to_string();
    assert!(message.contains("BGRA8UNORM_STORAGE"), "{message}");
}
