//! Class prompts from templates.

use crate::error::{Error, Result};

/// The template of the official CLIPTTA scripts for CIFAR-like data.
pub const DEFAULT_TEMPLATE: &str = "a photo of a {}";

/// Renders `template` for each class: `{}` becomes the class name with underscores as spaces.
pub fn render_prompts(classes: &[String], template: &str) -> Result<Vec<String>> {
    if !template.contains("{}") {
        return Err(Error::InvalidInput(format!("template {template:?} has no `{{}}` placeholder for the class name")));
    }
    Ok(classes.iter().map(|c| template.replace("{}", &c.replace('_', " "))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_rejects() {
        let classes = vec!["t-shirt".to_string(), "ankle_boot".to_string()];
        assert_eq!(render_prompts(&classes, DEFAULT_TEMPLATE).unwrap(), ["a photo of a t-shirt", "a photo of a ankle boot"]);
        assert!(render_prompts(&classes, "no slot").is_err());
    }
}
