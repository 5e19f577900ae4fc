//! CLIP's symmetric contrastive loss with soft targets: captions of the image's class count as
//! positives, weighted equally.

use candle_core::{Result, Tensor, D};

use cliptta::model::differentiable_log_softmax;

/// `(CE(images → captions) + CE(captions → images)) / 2` on `scale * z_img · z_txt^T`, where the
/// target of row i is uniform over the columns j with `labels[j] == labels[i]`. Both embeddings
/// are unit rows; `scale` is a scalar tensor (learned).
pub fn soft_target_clip_loss(z_img: &Tensor, z_txt: &Tensor, labels: &[u32], scale: &Tensor) -> Result<Tensor> {
    let n = labels.len();
    let mut target = vec![0f32; n * n];
    for i in 0..n {
        let same = labels.iter().filter(|&&l| l == labels[i]).count() as f32;
        for j in 0..n {
            if labels[j] == labels[i] {
                target[i * n + j] = 1.0 / same;
            }
        }
    }
    let target = Tensor::from_vec(target, (n, n), z_img.device())?.to_dtype(z_img.dtype())?;
    let logits = z_img.matmul(&z_txt.t()?)?.broadcast_mul(scale)?;
    let ce = |l: &Tensor| -> Result<Tensor> {
        (differentiable_log_softmax(l)? * &target)?.sum(D::Minus1)?.neg()?.mean_all()
    };
    // The target is symmetric, so the transposed logits use the same target.
    (ce(&logits)? + ce(&logits.t()?)?)? * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn perfect_alignment_with_distinct_classes_is_near_zero() -> Result<()> {
        let e = Tensor::eye(4, DType::F64, &Device::Cpu)?;
        let s = Tensor::new(100f64, &Device::Cpu)?;
        let l = soft_target_clip_loss(&e, &e, &[0, 1, 2, 3], &s)?.to_scalar::<f64>()?;
        assert!(l < 1e-30, "{l}");
        // Two images of one class: the best achievable is ln 2 per row.
        let z = Tensor::new(&[[1f64, 0.], [1., 0.]], &Device::Cpu)?;
        let l = soft_target_clip_loss(&z, &z, &[0, 0], &s)?.to_scalar::<f64>()?;
        assert!((l - 2f64.ln()).abs() < 1e-12, "{l}");
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let zi = Tensor::randn(0f64, 1.0, (5, 3), &dev)?;
        let zt = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 3), &dev)?)?;
        let s = Tensor::new(2.5f64, &dev)?;
        let labels = [0u32, 1, 0, 2, 1];
        let g = soft_target_clip_loss(&zi, zt.as_tensor(), &labels, &s)?.backward()?;
        let g = g.get(zt.as_tensor()).unwrap().flatten_all()?.to_vec1::<f64>()?;
        let base = zt.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        for i in 0..base.len() {
            let f = |d: f64| -> Result<f64> {
                let mut v = base.clone();
                v[i] += d;
                soft_target_clip_loss(&zi, &Tensor::from_vec(v, (5, 3), &dev)?, &labels, &s)?.to_scalar::<f64>()
            };
            let fd = (f(1e-6)? - f(-1e-6)?) / 2e-6;
            assert!((fd - g[i]).abs() <= 1e-6 * fd.abs().max(1e-3), "{i}: {fd} vs {}", g[i]);
        }
        Ok(())
    }
}
