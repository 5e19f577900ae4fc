//! The CLIP model against transformers (parity), finite differences (gradients), and broken
//! checkpoints (loader errors).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cliptta::model::{ClipConfig, ClipModel, Grad, LoadOptions, NormParams};
use cliptta::Error;

use crate::support::{fixture, floats, rel_max_err, tiny_reference, to_f64};

fn load(dtype: DType) -> ClipModel {
    ClipModel::load(fixture("tiny-clip"), &LoadOptions { dtype, ..Default::default() }).expect("tiny checkpoint loads")
}

fn reference_pixels(reference: &serde_json::Value, dtype: DType) -> Tensor {
    let shape: Vec<usize> = reference["pixel_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    Tensor::from_vec(floats(&reference["pixel_values"]), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

#[test]
fn tokenizer_matches_the_reference_ids() {
    let model = load(DType::F32);
    let reference = tiny_reference();
    for (text, ids) in reference["texts"].as_array().unwrap().iter().zip(reference["input_ids"].as_array().unwrap()) {
        let want: Vec<u32> = ids.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = model.tokenizer().encode(text.as_str().unwrap()).unwrap();
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn text_features_match_transformers() {
    let model = load(DType::F32);
    let reference = tiny_reference();
    let texts: Vec<String> = reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let got = to_f64(&model.text_features(&texts).unwrap());
    let err = rel_max_err(&got, &floats(&reference["text_embeds"]));
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn image_features_match_transformers_in_both_modes() {
    let model = load(DType::F32);
    let reference = tiny_reference();
    let pixels = reference_pixels(&reference, DType::F32);
    let params = model.vision().init_params().unwrap();
    let want = floats(&reference["image_embeds"]);
    for grad in [Grad::Disabled, Grad::Enabled] {
        let got = to_f64(&model.image_features(&pixels, &params, grad).unwrap());
        let err = rel_max_err(&got, &want);
        assert!(err < 1e-4, "{grad:?}: relative error {err}");
    }
    let scale = reference["logit_scale"].as_f64().unwrap();
    assert!((model.logit_scale() - scale).abs() / scale < 1e-5, "{} vs {scale}", model.logit_scale());
}

fn probe_loss(model: &ClipModel, pixels: &Tensor, params: &NormParams, direction: &Tensor) -> Tensor {
    (model.image_embeddings(pixels, params, Grad::Enabled).unwrap() * direction).unwrap().sum_all().unwrap()
}

/// Gradients of sum(z * r) with respect to every vision LayerNorm tensor, against PyTorch autograd
/// in float64 (reference written by make_tiny_clip.py).
#[test]
fn layer_norm_gradients_match_pytorch() {
    let model = load(DType::F64);
    let reference = tiny_reference();
    let pixels = reference_pixels(&reference, DType::F64);
    let direction = Tensor::from_vec(floats(&reference["grad_direction"]), (3, 32), &Device::Cpu).unwrap();
    let params = model.vision().init_params().unwrap();
    let loss = probe_loss(&model, &pixels, &params, &direction);
    let want_loss = reference["grad_loss"].as_f64().unwrap();
    assert!((loss.to_scalar::<f64>().unwrap() - want_loss).abs() < 1e-9);
    let grads = loss.backward().unwrap();
    let expected = reference["grad_layer_norms"].as_object().unwrap();
    assert_eq!(expected.len(), params.vars().len());
    for (name, var) in params.names().iter().zip(params.vars()) {
        let got = to_f64(grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}")));
        let err = rel_max_err(&got, &floats(&expected[name]));
        assert!(err < 1e-8, "{name}: relative error {err}");
    }
}

/// One forward over two image sets concatenated equals a forward over each, in embeddings and
/// in LayerNorm gradients of a loss over both: images do not interact in the vision tower, which
/// the adapter relies on when it embeds a CLIPTTA batch and its memory replay together (f64).
#[test]
fn a_concatenated_forward_equals_separate_forwards() {
    let model = load(DType::F64);
    let reference = tiny_reference();
    let pixels = reference_pixels(&reference, DType::F64);
    let n = pixels.dim(0).unwrap();
    let other = pixels.affine(-0.5, 0.1).unwrap();
    let direction = Tensor::from_vec(floats(&reference["grad_direction"]), (3, 32), &Device::Cpu).unwrap();
    let params = model.vision().init_params().unwrap();

    let both = Tensor::cat(&[&pixels, &other], 0).unwrap();
    let z_all = model.image_embeddings(&both, &params, Grad::Enabled).unwrap();
    let (z_a, z_b) = (z_all.narrow(0, 0, n).unwrap(), z_all.narrow(0, n, n).unwrap());
    let joint = ((&z_a * &direction).unwrap().sum_all().unwrap() + (&z_b * &direction).unwrap().sqr().unwrap().sum_all().unwrap()).unwrap();

    let sep_a = model.image_embeddings(&pixels, &params, Grad::Enabled).unwrap();
    let sep_b = model.image_embeddings(&other, &params, Grad::Enabled).unwrap();
    assert!(rel_max_err(&to_f64(&z_a), &to_f64(&sep_a)) < 1e-12);
    assert!(rel_max_err(&to_f64(&z_b), &to_f64(&sep_b)) < 1e-12);
    let separate = ((&sep_a * &direction).unwrap().sum_all().unwrap() + (&sep_b * &direction).unwrap().sqr().unwrap().sum_all().unwrap()).unwrap();

    let (g_joint, g_sep) = (joint.backward().unwrap(), separate.backward().unwrap());
    for (name, var) in params.names().iter().zip(params.vars()) {
        let a = to_f64(g_joint.get(var.as_tensor()).unwrap());
        let b = to_f64(g_sep.get(var.as_tensor()).unwrap());
        let err = rel_max_err(&a, &b);
        assert!(err < 1e-10, "{name}: relative error {err}");
    }
}

/// Central finite differences (f64) on a spread of LayerNorm scalars against autograd.
#[test]
fn layer_norm_gradients_match_finite_differences() {
    let model = load(DType::F64);
    let reference = tiny_reference();
    let pixels = reference_pixels(&reference, DType::F64);
    let direction = Tensor::from_vec(floats(&reference["grad_direction"]), (3, 32), &Device::Cpu).unwrap();
    let params = model.vision().init_params().unwrap();
    let grads = probe_loss(&model, &pixels, &params, &direction).backward().unwrap();
    let h = 1e-5;
    let mut checked = 0;
    for (k, var) in params.vars().iter().enumerate() {
        let base = to_f64(var.as_tensor());
        let g = to_f64(grads.get(var.as_tensor()).unwrap());
        for i in [k % base.len(), (7 * k + 3) % base.len()] {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, base.len(), &Device::Cpu).unwrap()).unwrap();
                probe_loss(&model, &pixels, &params, &direction).to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), base.len(), &Device::Cpu).unwrap()).unwrap();
            let rel = (fd - g[i]).abs() / fd.abs().max(g[i].abs()).max(1e-6);
            assert!(rel < 1e-4, "{} [{i}]: finite difference {fd} vs autograd {}", params.names()[k], g[i]);
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * params.vars().len());
}

/// A gradient step moves the LayerNorm set it was taken on and nothing else: the frozen weights
/// and a fresh parameter set give the same features as before.
#[test]
fn a_step_changes_only_its_own_layer_norms() {
    let model = load(DType::F32);
    let reference = tiny_reference();
    let pixels = reference_pixels(&reference, DType::F32);
    let fresh_before = to_f64(&model.image_features(&pixels, &model.vision().init_params().unwrap(), Grad::Disabled).unwrap());
    let params = model.vision().init_params().unwrap();
    let before = params.snapshot().unwrap();
    let direction = Tensor::ones((3, 32), DType::F32, &Device::Cpu).unwrap();
    let grads = probe_loss(&model, &pixels, &params, &direction).backward().unwrap();
    for var in params.vars() {
        let g = grads.get(var.as_tensor()).unwrap();
        var.set(&(var.as_tensor() - (g * 0.5).unwrap()).unwrap()).unwrap();
    }
    let adapted = to_f64(&model.image_features(&pixels, &params, Grad::Disabled).unwrap());
    assert!(rel_max_err(&adapted, &fresh_before) > 1e-3, "the step had no effect");
    let fresh_after = to_f64(&model.image_features(&pixels, &model.vision().init_params().unwrap(), Grad::Disabled).unwrap());
    assert_eq!(fresh_before, fresh_after, "frozen weights or checkpoint LayerNorms changed");
    params.restore(&before).unwrap();
    let restored = to_f64(&model.image_features(&pixels, &params, Grad::Disabled).unwrap());
    assert_eq!(restored, fresh_before);
}

#[test]
fn class_embeddings_average_normalised_templates() {
    let model = load(DType::F32);
    let classes = vec!["cat".to_string(), "t-shirt".to_string()];
    let templates = vec!["a photo of a {}".to_string(), "art of the {}".to_string()];
    let emb = model.class_embeddings(&classes, &templates).unwrap();
    let unit = |t: Tensor| t.broadcast_div(&t.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap();
    let a = unit(model.text_features(&["a photo of a cat".into(), "a photo of a t-shirt".into()]).unwrap());
    let b = unit(model.text_features(&["art of the cat".into(), "art of the t-shirt".into()]).unwrap());
    let want = to_f64(&unit((a + b).unwrap()));
    assert!(rel_max_err(&to_f64(&emb), &want) < 1e-6);
    let again = model.class_embeddings(&classes, &templates).unwrap();
    assert_eq!(to_f64(&again), to_f64(&emb));
    assert!(model.class_embeddings(&[], &templates).is_err());
    assert!(model.class_embeddings(&classes, &["no placeholder".into()]).is_err());
}

fn copy_checkpoint(to: &Path) {
    for f in ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"] {
        std::fs::copy(fixture("tiny-clip").join(f), to.join(f)).unwrap();
    }
}

fn read_tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn half_precision_checkpoints_load() {
    let reference = tiny_reference();
    let pixels = reference_pixels(&reference, DType::F32);
    let want = floats(&reference["image_embeds"]);
    for dtype in [DType::F16, DType::BF16] {
        let dir = tempfile::tempdir().unwrap();
        copy_checkpoint(dir.path());
        let converted: HashMap<String, Tensor> =
            read_tensors(dir.path()).into_iter().map(|(k, v)| (k, v.to_dtype(dtype).unwrap())).collect();
        candle_core::safetensors::save(&converted, dir.path().join("model.safetensors")).unwrap();
        let model = ClipModel::load(dir.path(), &LoadOptions::default()).unwrap();
        let params = model.vision().init_params().unwrap();
        let got = to_f64(&model.image_features(&pixels, &params, Grad::Disabled).unwrap());
        let err = rel_max_err(&got, &want);
        let tol = if dtype == DType::F16 { 1e-2 } else { 5e-2 };
        assert!(err < tol, "{dtype:?}: relative error {err}");
    }
}

/// Each way a checkpoint can be broken gives an error naming the file (and tensor).
#[test]
fn broken_checkpoints_give_errors_that_name_the_culprit() {
    type Breaker = fn(&Path);
    let cases: Vec<(&str, Breaker, Vec<&str>)> = vec![
        ("missing config", |d| std::fs::remove_file(d.join("config.json")).unwrap(), vec!["config.json"]),
        ("missing weights", |d| std::fs::remove_file(d.join("model.safetensors")).unwrap(), vec!["model.safetensors"]),
        ("missing tokenizer", |d| std::fs::remove_file(d.join("tokenizer.json")).unwrap(), vec!["tokenizer.json"]),
        ("bad config JSON", |d| std::fs::write(d.join("config.json"), "{\"text_config\": [").unwrap(), vec!["config.json", "invalid JSON"]),
        ("bad tokenizer JSON", |d| std::fs::write(d.join("tokenizer.json"), "{}").unwrap(), vec!["tokenizer.json"]),
        ("bad preprocessor JSON", |d| std::fs::write(d.join("preprocessor_config.json"), "nope").unwrap(), vec!["preprocessor_config.json"]),
        ("garbage weights", |d| std::fs::write(d.join("model.safetensors"), b"not safetensors").unwrap(), vec!["model.safetensors"]),
        (
            "missing tensor",
            |d| {
                let mut t = read_tensors(d);
                t.remove("vision_model.encoder.layers.1.mlp.fc2.weight");
                candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
            },
            vec!["model.safetensors", "vision_model.encoder.layers.1.mlp.fc2.weight", "missing"],
        ),
        (
            "wrong shape",
            |d| {
                let mut t = read_tensors(d);
                t.insert("text_model.final_layer_norm.bias".into(), Tensor::zeros(47, DType::F32, &Device::Cpu).unwrap());
                candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
            },
            vec!["model.safetensors", "text_model.final_layer_norm.bias", "[47]", "[48]"],
        ),
        (
            "integer dtype",
            |d| {
                let mut t = read_tensors(d);
                t.insert("visual_projection.weight".into(), Tensor::zeros((32, 64), DType::U8, &Device::Cpu).unwrap());
                candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
            },
            vec!["visual_projection.weight", "dtype"],
        ),
    ];
    for (what, breaker, needles) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_checkpoint(dir.path());
        breaker(dir.path());
        let err = match ClipModel::load(dir.path(), &LoadOptions::default()) {
            Ok(_) => panic!("{what}: loaded a broken checkpoint"),
            Err(e) => e,
        };
        let msg = err.to_string();
        for needle in needles {
            assert!(msg.contains(needle), "{what}: `{msg}` lacks `{needle}`");
        }
        if what == "missing tensor" {
            assert!(matches!(err, Error::MissingTensor { .. }));
        }
    }
}

#[test]
fn bad_pixel_shapes_are_errors() {
    let model = load(DType::F32);
    let params = model.vision().init_params().unwrap();
    let pixels = Tensor::zeros((2, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let err = model.image_features(&pixels, &params, Grad::Disabled).unwrap_err().to_string();
    assert!(err.contains("[batch, 3, 32, 32]"), "{err}");
}

/// A checkpoint written by this crate loads back, with a word-level tokenizer.
#[test]
fn written_random_checkpoints_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ClipConfig::vit_b_32();
    cfg.vision.hidden_size = 32;
    cfg.vision.intermediate_size = 64;
    cfg.vision.num_hidden_layers = 1;
    cfg.vision.num_attention_heads = 2;
    cfg.vision.image_size = 28;
    cfg.vision.patch_size = 7;
    cfg.text.hidden_size = 32;
    cfg.text.intermediate_size = 64;
    cfg.text.num_hidden_layers = 1;
    cfg.text.num_attention_heads = 2;
    cfg.projection_dim = 16;
    let words: Vec<String> = ["a", "photo", "of", "shirt", "boot"].iter().map(|s| s.to_string()).collect();
    let written = cliptta::model::write_random_checkpoint(dir.path(), &cfg, &words, 7).unwrap();
    let model = ClipModel::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(model.config(), &written);
    let ids = model.tokenizer().encode("A photo of Shirt zebra").unwrap();
    assert_eq!(ids, vec![6, 1, 2, 3, 4, 0, 7]);
    let emb = model.class_embeddings(&["shirt".into(), "boot".into()], &["a photo of {}".into()]).unwrap();
    assert_eq!(emb.dims(), &[2, 16]);
    assert_eq!(model.vision().init_params().unwrap().vars().len(), 2 * (2 + 2 * 1));
}

/// The vision tower against candle-transformers' CLIP vision model (an independent
/// implementation) on the same quick_gelu checkpoint.
#[test]
fn vision_tower_matches_candle_transformers() {
    use candle_core::Module;
    use candle_transformers::models::clip::text_model::Activation as CtActivation;
    use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
    let model = load(DType::F32);
    let v = &model.config().vision;
    let cfg = ClipVisionConfig {
        embed_dim: v.hidden_size,
        activation: CtActivation::QuickGelu,
        intermediate_size: v.intermediate_size,
        num_hidden_layers: v.num_hidden_layers,
        num_attention_heads: v.num_attention_heads,
        projection_dim: model.config().projection_dim,
        num_channels: v.num_channels,
        image_size: v.image_size,
        patch_size: v.patch_size,
    };
    let path = fixture("tiny-clip").join("model.safetensors");
    // SAFETY: a read-only map of a test fixture nobody modifies.
    let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }.unwrap();
    let theirs = ClipVisionTransformer::new(vb.pp("vision_model"), &cfg).unwrap();
    let proj = vb.get((model.config().projection_dim, v.hidden_size), "visual_projection.weight").unwrap();
    let reference = tiny_reference();
    let pixels = reference_pixels(&reference, DType::F32);
    let want = to_f64(&theirs.forward(&pixels).unwrap().matmul(&proj.t().unwrap()).unwrap());
    let params = model.vision().init_params().unwrap();
    let got = to_f64(&model.image_features(&pixels, &params, Grad::Enabled).unwrap());
    let err = rel_max_err(&got, &want);
    assert!(err < 1e-4, "relative error {err}");
}

/// For the published configurations of OpenAI's ViT-B/32, ViT-B/16 and ViT-L/14, the loader
/// expects exactly the tensors (names and shapes) of transformers' CLIPModel
/// (tests/fixtures/hf-shapes.json, from make_hf_shapes.py).
#[test]
fn expected_tensors_match_transformers_for_openai_shapes() {
    let text = std::fs::read_to_string(fixture("hf-shapes.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    for name in ["clip-vit-base-patch32", "clip-vit-base-patch16", "clip-vit-large-patch14"] {
        let entry = &all[name];
        let cfg = ClipConfig::from_json(&entry["config"].to_string(), Path::new(name)).unwrap();
        let ours: HashMap<String, Vec<usize>> = cliptta::model::tensor_shapes(&cfg).into_iter().collect();
        let theirs: HashMap<String, Vec<usize>> = entry["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()))
            .collect();
        assert_eq!(ours, theirs, "{name}");
        let vision_norms = theirs
            .keys()
            .filter(|k| k.starts_with("vision_model.") && (k.contains("norm") || k.contains("layrnorm")) && k.ends_with(".weight"))
            .count();
        assert_eq!(vision_norms, cfg.vision.num_layer_norms(), "{name}");
    }
}
