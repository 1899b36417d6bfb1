//! The prompt tools behind `POST /prompt/random` and `/prompt/improve`. Built in, they are word
//! lists and rules: a random prompt is assembled from a seed, and an improved prompt keeps the
//! user's words and adds what a good image prompt names and this one lacks (medium, lighting,
//! detail, composition; motion for video), chosen by a hash of the prompt, so the same prompt
//! always improves the same way. With `[prompt_tools] url`, an OpenAI-compatible
//! chat-completions server writes them instead.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::PromptToolsConfig;
use crate::render::backends::{BackendError, Http};
use crate::render::builtin::SplitMix;
use crate::setting::InvalidSetting;
use crate::vocabulary::MAX_PROMPT_CHARS;

const SUBJECTS: &[&str] = &[
    "an old lighthouse keeper",
    "a red fox",
    "a clockwork owl",
    "a lone astronaut",
    "a street musician",
    "a paper boat",
    "a snow leopard",
    "a tiny dragon",
    "a vintage bicycle",
    "a glass greenhouse",
    "a sleeping cat",
    "a mountain monastery",
    "a koi pond",
    "a robot gardener",
    "a hot-air balloon",
    "a wandering knight",
];
const SETTINGS: &[&str] = &[
    "on a windswept cliff",
    "in a rain-soaked neon alley",
    "in a misty pine forest",
    "on the surface of a frozen lake",
    "in a sunlit library",
    "among floating islands",
    "at a crowded night market",
    "in an overgrown ruin",
    "beside a quiet canal",
    "under a sky full of auroras",
    "in a desert of glass dunes",
    "on a rooftop garden above the city",
];
const MEDIA: &[&str] = &[
    "oil painting",
    "watercolour illustration",
    "cinematic photograph",
    "digital concept art",
    "ink and wash drawing",
    "isometric 3D render",
    "studio photograph",
    "gouache painting",
];
const LIGHTING: &[&str] = &[
    "soft golden-hour light",
    "dramatic rim lighting",
    "diffuse overcast light",
    "warm candlelight",
    "cool moonlight",
    "volumetric light through haze",
];
const DETAIL: &[&str] = &["highly detailed", "intricate textures", "sharp focus", "fine detail and crisp edges"];
const COMPOSITION: &[&str] =
    &["balanced composition", "wide establishing shot", "close-up, shallow depth of field", "low-angle view"];
const MOTION: &[&str] = &["slow camera push-in", "gentle drifting motion", "smooth tracking shot"];

/// What a prompt already names, by the words that give each aspect away.
const MEDIUM_WORDS: &[&str] = &[
    "painting",
    "photo",
    "photograph",
    "photography",
    "illustration",
    "render",
    "sketch",
    "drawing",
    "watercolor",
    "watercolour",
    "oil",
    "digital",
    "3d",
    "anime",
    "cartoon",
    "art",
    "pixel",
];
const LIGHTING_WORDS: &[&str] =
    &["light", "lighting", "lit", "sunset", "sunrise", "dusk", "dawn", "glow", "shadow", "shadows", "night", "neon"];
const DETAIL_WORDS: &[&str] = &["detailed", "detail", "sharp", "4k", "8k", "hdr", "intricate", "crisp"];
const COMPOSITION_WORDS: &[&str] =
    &["composition", "close-up", "closeup", "wide", "portrait", "shot", "angle", "view", "framing"];
const MOTION_WORDS: &[&str] = &["motion", "camera", "pan", "zoom", "tracking", "moving", "slow-motion"];

/// Why a prompt tool gave no prompt.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PromptError(pub String);

/// The prompt tools of this server.
pub struct PromptTools {
    llm: Option<Llm>,
}

struct Llm {
    http: Http,
    model: Option<String>,
    timeout: std::time::Duration,
}

impl PromptTools {
    pub fn new(config: &PromptToolsConfig) -> Result<PromptTools, InvalidSetting> {
        let llm = match &config.url {
            None => None,
            Some(url) => Some(Llm {
                http: Http::build("the prompt model", "prompt_tools", url, config.api_key.as_ref(), &BTreeMap::new())?,
                model: config.model.clone(),
                timeout: config.timeout,
            }),
        };
        Ok(PromptTools { llm })
    }

    /// A random image prompt; `seed` picks it when built in.
    pub async fn random(&self, seed: u64) -> Result<String, PromptError> {
        match &self.llm {
            None => Ok(random_prompt(seed)),
            Some(llm) => {
                let instruction = "Write one vivid, specific prompt for an image generator: a subject, a setting, \
                                   a medium and the lighting, in one line under 60 words. Answer with the prompt only.";
                llm.complete(instruction, &format!("Surprise me (variation {seed})."), 1.0).await
            }
        }
    }

    /// `prompt` improved for an image (or video) generator, following `instructions` if given.
    pub async fn improve(&self, prompt: &str, instructions: Option<&str>, video: bool) -> Result<String, PromptError> {
        match &self.llm {
            None => Ok(improve_prompt(prompt, instructions, video)),
            Some(llm) => {
                let target = if video { "a video generator" } else { "an image generator" };
                let mut instruction = format!(
                    "Rewrite the user's prompt for {target}: keep its subject and intent, add concrete detail about \
                     medium, lighting and composition, in one line under 120 words. Answer with the prompt only."
                );
                if let Some(extra) = instructions {
                    instruction.push_str(&format!(" Follow these instructions too: {extra}"));
                }
                llm.complete(&instruction, prompt, 0.3).await
            }
        }
    }
}

impl Llm {
    async fn complete(&self, system: &str, user: &str, temperature: f64) -> Result<String, PromptError> {
        let mut body = json!({
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": temperature,
            "max_tokens": 400,
            "stream": false,
        });
        if let Some(model) = &self.model {
            body["model"] = json!(model);
        }
        let request = self.http.post("chat/completions").json(&body).timeout(self.timeout);
        let answer = self.http.send_json(request).await.map_err(|e| match e {
            BackendError::Unavailable(why) | BackendError::Failed(why) => PromptError(why),
        })?;
        let text = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| PromptError(format!("{} answered without choices[0].message.content", self.http.name)))?;
        let prompt = clean(text);
        if prompt.is_empty() {
            return Err(PromptError(format!("{} answered with an empty prompt", self.http.name)));
        }
        Ok(prompt)
    }
}

/// A model's answer as one prompt line: surrounding quotes and whitespace gone, lines joined,
/// at most [`MAX_PROMPT_CHARS`] characters (so it can be sent to `POST /generations`).
fn clean(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = joined.trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace());
    trimmed.chars().take(MAX_PROMPT_CHARS).collect()
}

/// An entry of `list` chosen by `seed`; each `salt` gives an independent choice.
fn pick<'a>(list: &[&'a str], seed: u64, salt: u64) -> &'a str {
    let mut random = SplitMix(seed ^ salt.wrapping_mul(0xA24B_AED4_963E_E407));
    list[(random.next() % list.len() as u64) as usize]
}

/// The built-in random prompt of `seed`.
pub fn random_prompt(seed: u64) -> String {
    format!(
        "{} {}, {}, {}, {}",
        pick(SUBJECTS, seed, 1),
        pick(SETTINGS, seed, 2),
        pick(MEDIA, seed, 3),
        pick(LIGHTING, seed, 4),
        pick(DETAIL, seed, 5)
    )
}

/// The built-in improvement of `prompt`: its words, then what it lacks, then `instructions`.
pub fn improve_prompt(prompt: &str, instructions: Option<&str>, video: bool) -> String {
    let base = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
    let base = base.trim_end_matches(|c: char| c == ',' || c == '.' || c.is_whitespace());
    let words: Vec<String> = base
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let names = |aspect: &[&str]| words.iter().any(|w| aspect.contains(&w.as_str()));
    let seed = u64::from_le_bytes(Sha256::digest(base.to_lowercase()).as_slice()[..8].try_into().expect("8 bytes"));
    let mut parts = vec![base.to_string()];
    let aspects: [(&[&str], &[&str], u64); 4] = [
        (MEDIUM_WORDS, MEDIA, 1),
        (LIGHTING_WORDS, LIGHTING, 2),
        (DETAIL_WORDS, DETAIL, 3),
        (COMPOSITION_WORDS, COMPOSITION, 4),
    ];
    for (giveaways, phrases, salt) in aspects {
        if !names(giveaways) {
            parts.push(pick(phrases, seed, salt).to_string());
        }
    }
    if video && !names(MOTION_WORDS) {
        parts.push(pick(MOTION, seed, 5).to_string());
    }
    if let Some(extra) = instructions.map(str::trim).filter(|s| !s.is_empty()) {
        parts.push(extra.trim_end_matches('.').to_string());
    }
    clean(&parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improvement_keeps_the_prompt_and_adds_only_what_it_lacks() {
        let improved = improve_prompt("a cat on a windowsill", None, false);
        assert!(improved.starts_with("a cat on a windowsill, "), "{improved}");
        assert!(MEDIA.iter().any(|m| improved.contains(m)), "{improved}");
        assert!(LIGHTING.iter().any(|l| improved.contains(l)), "{improved}");
        assert_eq!(improved, improve_prompt("  a cat on a  windowsill. ", None, false), "deterministic");

        let rich = "an oil painting of a harbour at dusk, highly detailed, wide composition";
        assert_eq!(improve_prompt(rich, None, false), rich);
        let video = improve_prompt(rich, Some("make it stormy."), true);
        assert!(MOTION.iter().any(|m| video.contains(m)) && video.ends_with("make it stormy"), "{video}");
    }

    #[test]
    fn random_prompts_vary_with_the_seed_and_stay_short() {
        let prompts: std::collections::BTreeSet<String> = (0..50).map(random_prompt).collect();
        assert!(prompts.len() > 40, "{} distinct of 50", prompts.len());
        assert!(prompts.iter().all(|p| p.len() < 200 && p.matches(", ").count() == 3), "{prompts:?}");
    }

    #[test]
    fn model_answers_become_one_prompt_line() {
        assert_eq!(clean("  \"A fox\n in snow\"  "), "A fox in snow");
        assert_eq!(clean(&"x".repeat(2000)).len(), MAX_PROMPT_CHARS);
    }
}
