//! Built-in renderer speed: `cargo bench --bench render`. Renders (and JPEG-encodes) images of
//! several sizes on one core and prints the median and 95th percentile per image, a generation of
//! four images guided by a large init image, and the 2x upscale of a 512x512 image. Results go
//! into BENCHMARKS.md.

use std::time::{Duration, Instant};

use easel::generation::GenerationParams;
use easel::models::Catalogue;
use easel::render::GenerateRequest;
use easel::render::builtin::{Decoded, render_one};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn measure(label: &str, runs: usize, mut work: impl FnMut(usize)) {
    work(0);
    let mut times: Vec<Duration> = (0..runs)
        .map(|n| {
            let start = Instant::now();
            work(n);
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "{label:<34} median {:>7.2} ms   p95 {:>7.2} ms   ({runs} runs)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3
    );
}

fn main() {
    let catalogue = Catalogue::new(&[]).unwrap();
    for (width, height) in [(64, 64), (512, 512), (1024, 768), (1536, 1536)] {
        let body = serde_json::json!({
            "prompt": "An oil painting of a cat sitting on a windowsill at dusk, soft light",
            "negative_prompt": "blurry", "width": width, "height": height, "num_images": 1, "seed": 905778432
        });
        let params = GenerationParams::parse(&body, &catalogue, |_| 0).unwrap();
        let request = GenerateRequest { params, init_image: None, guides: Default::default() };
        let decoded = Decoded::new(&request).unwrap();
        measure(&format!("render {width}x{height}"), if width < 512 { 2000 } else { 40 }, |n| {
            render_one(&request, &decoded, n as u32).unwrap();
        });
    }
    let render = |body: serde_json::Value, init_image| {
        let params = GenerationParams::parse(&body, &catalogue, |_| 0).unwrap();
        let request = GenerateRequest { params, init_image, guides: Default::default() };
        render_one(&request, &Decoded::new(&request).unwrap(), 0).unwrap()
    };
    // Image to image: four 512x512 images from a 1536x1536 init image, decoded once per
    // generation (as the renderer does) or once per image.
    let init = render(serde_json::json!({"prompt": "a harbour", "width": 1536, "height": 1536, "seed": 2}), None);
    let body = serde_json::json!({"prompt": "a harbour at night", "width": 512, "height": 512, "num_images": 4,
                                  "seed": 3});
    let mut params = GenerationParams::parse(&body, &catalogue, |_| 0).unwrap();
    params.init_strength = Some(0.4);
    let request = GenerateRequest { params, init_image: Some(init.jpeg), guides: Default::default() };
    measure("4 x 512x512, init decoded once", 20, |_| {
        let decoded = Decoded::new(&request).unwrap();
        (0..4).for_each(|n| drop(render_one(&request, &decoded, n).unwrap()));
    });
    measure("4 x 512x512, init per image", 20, |_| {
        (0..4).for_each(|n| drop(render_one(&request, &Decoded::new(&request).unwrap(), n).unwrap()));
    });
    let source = render(serde_json::json!({"prompt": "a castle", "width": 512, "height": 512, "seed": 1}), None);
    let renderer = easel::render::builtin::BuiltinRenderer::new(1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let transforms = [
        ("upscale 512x512 -> 1024x1024", easel::records::Transform::Upscale),
        ("remove the background of 512x512", easel::records::Transform::NoBackground),
        ("unzoom 512x512", easel::records::Transform::Unzoom),
    ];
    for (name, transform) in transforms {
        measure(name, 20, |_| {
            runtime.block_on(easel::render::Renderer::transform(&renderer, source.jpeg.clone(), &transform)).unwrap();
        });
    }
}
