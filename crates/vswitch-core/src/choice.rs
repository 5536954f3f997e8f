//! The error of every setting that is one of a few words (`--steering`, `--datapath`, a hook,
//! a capture direction, a MACVLAN mode).

/// A word that names none of a setting's choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {setting} {word:?} ({choices})")]
pub struct UnknownChoice {
    /// What was being set.
    pub setting: &'static str,
    /// What was given.
    pub word: String,
    /// The words it may be, as a list to show.
    pub choices: &'static str,
}

impl UnknownChoice {
    /// `word` is none of `choices` for `setting`.
    pub fn new(setting: &'static str, word: &str, choices: &'static str) -> Self {
        UnknownChoice {
            setting,
            word: word.to_owned(),
            choices,
        }
    }
}
