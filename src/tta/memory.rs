//! The class-wise confident memory (CCM) of CLIPTTA: per class, the most confident test images
//! seen so far, replayed at every adaptation step.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct Item {
    image: Tensor,
    confidence: f32,
}

/// Per-class store of preprocessed images with their (fixed) confidences.
#[derive(Debug, Clone)]
pub struct ClassMemory {
    num_shots: usize,
    sample_size: usize,
    classes: Vec<Vec<Item>>,
}

impl ClassMemory {
    /// `num_shots` images per class at most; about `sample_size` replayed per step.
    pub fn new(num_classes: usize, num_shots: usize, sample_size: usize) -> Self {
        Self { num_shots, sample_size, classes: vec![Vec::new(); num_classes] }
    }

    /// Images held, over all classes.
    pub fn len(&self) -> usize {
        self.classes.iter().map(Vec::len).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images held per class.
    pub fn counts(&self) -> Vec<usize> {
        self.classes.iter().map(Vec::len).collect()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.classes.iter_mut().for_each(Vec::clear);
    }

    /// Adds `images` `[n, c, h, w]` under their pseudo-labels, then keeps per class the
    /// `num_shots` highest confidences (earlier items win ties).
    pub fn update(&mut self, images: &Tensor, labels: &[u32], confidences: &[f32]) -> Result<()> {
        let n = images.dim(0)?;
        if labels.len() != n || confidences.len() != n {
            return Err(Error::Internal(format!(
                "memory update with {n} images, {} labels, {} confidences",
                labels.len(),
                confidences.len()
            )));
        }
        let images = images.to_device(&Device::Cpu)?;
        for (i, (&label, &confidence)) in labels.iter().zip(confidences).enumerate() {
            let slot = self
                .classes
                .get_mut(label as usize)
                .ok_or_else(|| Error::Internal(format!("memory label {label} out of range")))?;
            slot.push(Item { image: images.get(i)?, confidence });
        }
        for slot in &mut self.classes {
            if slot.len() > self.num_shots {
                // Stable sort: among equal confidences the older item stays.
                slot.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
                slot.truncate(self.num_shots);
            }
        }
        Ok(())
    }

    /// Images replayed per class: `max(1, min(sample_size, num_shots * classes) / classes)`.
    pub fn per_class(&self) -> usize {
        let k = self.classes.len().max(1);
        (self.sample_size.min(self.num_shots * k) / k).max(1)
    }

    /// A class-balanced sample: per class, `per_class` images drawn uniformly without
    /// replacement, or all of them when it holds fewer. `None` when the memory is empty.
    pub fn sample(&self, rng: &mut impl Rng, device: &Device) -> Result<Option<Tensor>> {
        let per_class = self.per_class();
        let mut picked = Vec::new();
        for slot in &self.classes {
            if slot.len() > per_class {
                let idx = rand::seq::index::sample(rng, slot.len(), per_class);
                picked.extend(idx.iter().map(|i| slot[i].image.clone()));
            } else {
                picked.extend(slot.iter().map(|it| it.image.clone()));
            }
        }
        if picked.is_empty() {
            return Ok(None);
        }
        Ok(Some(Tensor::stack(&picked, 0)?.to_device(device)?))
    }

    /// Everything held as tensors (images `[m, c, h, w]`, labels `[m]` u32, confidences `[m]`),
    /// for checkpoints; `None` when empty.
    pub fn to_tensors(&self) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut conf = Vec::new();
        for (k, slot) in self.classes.iter().enumerate() {
            for it in slot {
                images.push(it.image.clone());
                labels.push(k as u32);
                conf.push(it.confidence);
            }
        }
        if images.is_empty() {
            return Ok(None);
        }
        let m = labels.len();
        Ok(Some((
            Tensor::stack(&images, 0)?,
            Tensor::from_vec(labels, m, &Device::Cpu)?,
            Tensor::from_vec(conf, m, &Device::Cpu)?,
        )))
    }

    /// Replaces the contents from [`ClassMemory::to_tensors`] output.
    pub fn load_tensors(&mut self, images: &Tensor, labels: &Tensor, confidences: &Tensor) -> Result<()> {
        self.clear();
        let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let conf = confidences.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        for (i, (&l, &c)) in labels.iter().zip(&conf).enumerate() {
            let slot = self
                .classes
                .get_mut(l as usize)
                .ok_or_else(|| Error::State(format!("saved memory label {l} out of range")))?;
            slot.push(Item { image: images.get(i)?, confidence: c });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn images(values: &[f32]) -> Tensor {
        Tensor::from_vec(values.to_vec(), (values.len(), 1, 1, 1), &Device::Cpu).unwrap()
    }

    fn held(mem: &ClassMemory) -> Vec<Vec<f32>> {
        mem.classes.iter().map(|s| s.iter().map(|it| it.confidence).collect()).collect()
    }

    #[test]
    fn keeps_the_most_confident_per_class() {
        let mut mem = ClassMemory::new(2, 2, 4);
        mem.update(&images(&[1., 2., 3.]), &[0, 0, 1], &[0.5, 0.9, 0.4]).unwrap();
        mem.update(&images(&[4., 5., 6.]), &[0, 1, 1], &[0.7, 0.3, 0.8]).unwrap();
        assert_eq!(held(&mem), vec![vec![0.9, 0.7], vec![0.8, 0.4]]);
        // The images travel with their confidences.
        let (imgs, labels, _) = mem.to_tensors().unwrap().unwrap();
        assert_eq!(imgs.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![2., 4., 6., 3.]);
        assert_eq!(labels.to_vec1::<u32>().unwrap(), vec![0, 0, 1, 1]);
    }

    #[test]
    fn samples_are_class_balanced() {
        let mut mem = ClassMemory::new(3, 10, 6);
        let n = 10;
        let vals: Vec<f32> = (0..n).map(|i| i as f32).collect();
        mem.update(&images(&vals), &[0; 10], &vec![0.5; 10]).unwrap();
        mem.update(&images(&[100.]), &[1], &[0.5]).unwrap();
        assert_eq!(mem.per_class(), 2);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let s = mem.sample(&mut rng, &Device::Cpu).unwrap().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // Two distinct images of class 0, the single one of class 1, none of class 2.
            assert_eq!(s.len(), 3);
            assert!(s[0] != s[1] && s[0] < 10. && s[1] < 10.);
            assert_eq!(s[2], 100.);
            seen.insert(s[0] as i32);
        }
        assert!(seen.len() > 5, "sampling is not spread: {seen:?}");
        assert!(ClassMemory::new(2, 1, 1).sample(&mut rng, &Device::Cpu).unwrap().is_none());
    }
}
