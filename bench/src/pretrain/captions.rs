//! Captions for pretraining: several templates and several names per class, so the text tower
//! learns words rather than ten fixed vectors.

use rand::Rng;

/// Templates used in pretraining; `a photo of a {}` is the evaluation prompt.
pub const FASHION_TEMPLATES: [&str; 8] = [
    "a photo of a {}",
    "a picture of a {}",
    "a {}",
    "a grayscale photo of the {}",
    "a low resolution photo of a {}",
    "an image of a {}",
    "a photo of the small {}",
    "a product photo of a {}",
];

/// Class synonyms with templates.
#[derive(Debug, Clone)]
pub struct CaptionSet {
    /// Names per class; the first is the canonical class name.
    pub synonyms: Vec<Vec<String>>,
    /// Templates with a `{}` placeholder.
    pub templates: Vec<String>,
}

impl CaptionSet {
    /// Fashion-MNIST's ten classes with everyday synonyms.
    pub fn fashion_mnist() -> Self {
        let synonyms: [&[&str]; 10] = [
            &["t-shirt", "top", "tee", "t shirt"],
            &["trouser", "trousers", "pants", "jeans"],
            &["pullover", "sweater", "jumper"],
            &["dress", "gown", "frock"],
            &["coat", "jacket", "overcoat"],
            &["sandal", "sandals", "flip flop"],
            &["shirt", "button shirt", "blouse"],
            &["sneaker", "sneakers", "trainer", "running shoe"],
            &["bag", "handbag", "purse"],
            &["ankle boot", "boot", "boots"],
        ];
        Self {
            synonyms: synonyms.iter().map(|s| s.iter().map(|w| w.to_string()).collect()).collect(),
            templates: FASHION_TEMPLATES.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// The canonical class names.
    pub fn class_names(&self) -> Vec<String> {
        self.synonyms.iter().map(|s| s[0].clone()).collect()
    }

    /// A random caption for class `label`.
    pub fn sample(&self, label: usize, rng: &mut impl Rng) -> String {
        let names = &self.synonyms[label];
        let name = &names[rng.random_range(0..names.len())];
        let template = &self.templates[rng.random_range(0..self.templates.len())];
        template.replace("{}", name)
    }

    /// Every word of every caption, split as the word-level tokenizer splits (whitespace and
    /// punctuation), for building the vocabulary.
    pub fn vocabulary(&self) -> Vec<String> {
        let mut words: Vec<String> = Vec::new();
        let mut push = |text: &str| {
            let mut word = String::new();
            let flush = |word: &mut String, words: &mut Vec<String>| {
                if !word.is_empty() && !words.contains(word) {
                    words.push(word.clone());
                }
                word.clear();
            };
            for ch in text.to_lowercase().chars() {
                if ch.is_alphanumeric() || ch == '_' {
                    word.push(ch);
                } else {
                    flush(&mut word, &mut words);
                    if !ch.is_whitespace() && !words.contains(&ch.to_string()) {
                        words.push(ch.to_string());
                    }
                }
            }
            flush(&mut word, &mut words);
        };
        for t in &self.templates {
            push(&t.replace("{}", ""));
        }
        for names in &self.synonyms {
            for n in names {
                push(n);
            }
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn vocabulary_covers_every_caption() {
        let set = CaptionSet::fashion_mnist();
        let vocab = set.vocabulary();
        for w in ["t", "-", "shirt", "ankle", "boot", "grayscale", "photo"] {
            assert!(vocab.contains(&w.to_string()), "{w}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let c = set.sample(9, &mut rng);
        assert!(c.contains("boot"), "{c}");
        assert_eq!(set.class_names()[0], "t-shirt");
    }
}
