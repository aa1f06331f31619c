//! How the embedded backend turns text into terms. It follows the same
//! matching rules as the Elasticsearch analyzers in
//! [`super::elastic::mapping`], by a cheaper route.
//!
//! A text is normalised (lowercase, diacritics and Arabic tashkeel and
//! tatweel removed, alef forms unified), then split into words. Each word
//! is indexed as:
//! - its 1- and 2-character prefixes, marked with a leading `^`, so a short
//!   query word matches by prefix only;
//! - its trigrams, at consecutive positions, with a gap between words.
//!
//! A query word of 3 or more characters is the phrase of its own trigrams:
//! consecutive trigrams within one word, which is exactly "the word
//! contains this". A prefix is an infix at position 0, so both rules hold,
//! for words of any length. A word of n characters costs n index terms,
//! where n-grams of 3 to 20 characters would cost up to 18 per position;
//! indexing is several times cheaper, and a phrase of trigrams is still a
//! fast, exact query.
use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

/// Words are cut at this many characters, as Elasticsearch's standard
/// tokenizer does, so one enormous "word" cannot explode the index.
const MAX_WORD: usize = 255;

/// Lowercases and strips what the analyzers strip. Decomposing first turns
/// "é" into "e" plus a combining accent and "أ" into "ا" plus a combining
/// hamza, so dropping combining marks handles Latin diacritics, Arabic
/// tashkeel and the hamza-seated alef forms in one rule.
pub fn normalize(text: &str) -> String {
    // Most messages are plain ASCII, which nothing below changes but for
    // case; decomposing them char by char was 9% of the indexing
    // thread's time (`perf record` through the embedded drain).
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    fold(text)
}

/// [`normalize`] of any text, the long way.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            // Tatweel only stretches a word.
            '\u{0640}' => {}
            // Alef wasla has no decomposition.
            '\u{0671}' => out.push('\u{0627}'),
            // Alef maksura and teh marbuta, as Elasticsearch's
            // arabic_normalization folds them.
            '\u{0649}' => out.push('\u{064A}'),
            '\u{0629}' => out.push('\u{0647}'),
            // Letters that do not decompose but that asciifolding folds.
            'ß' => out.push_str("ss"),
            'æ' | 'Æ' => out.push_str("ae"),
            'œ' | 'Œ' => out.push_str("oe"),
            'ø' | 'Ø' => out.push('o'),
            'ł' | 'Ł' => out.push('l'),
            'đ' | 'Đ' => out.push('d'),
            'þ' | 'Þ' => out.push_str("th"),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Ideographs and kana are words of their own, one character each, as in
/// Unicode word segmentation (and Elasticsearch's standard tokenizer).
fn stands_alone(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30FF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2FA1F}')
}

/// The words of a normalised text.
pub fn words(normalized: &str) -> Vec<Vec<char>> {
    let mut out = Vec::new();
    let mut word: Vec<char> = Vec::new();
    for c in normalized.chars() {
        if stands_alone(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(vec![c]);
        } else if c.is_alphanumeric() {
            word.push(c);
            if word.len() == MAX_WORD {
                out.push(std::mem::take(&mut word));
            }
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Marks the prefix terms, so `^ab` (starts with "ab") is never confused
/// with a word's trigrams.
const PREFIX_MARK: char = '^';
/// Positions left empty between words, so no phrase spans two words.
const WORD_GAP: usize = 3;

/// What one query word must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WordQuery {
    /// A 1- or 2-character word: a word starting with it.
    Prefix(String),
    /// These trigrams at consecutive positions: a word containing it.
    Trigrams(Vec<String>),
}

fn trigrams(word: &[char]) -> impl Iterator<Item = String> + '_ {
    word.windows(3).map(|w| w.iter().collect())
}

fn prefix(word: &[char], len: usize) -> String {
    std::iter::once(PREFIX_MARK)
        .chain(word[..len].iter().copied())
        .collect()
}

/// What each word of a query must match; empty when the query has no word
/// (only punctuation or emoji).
pub fn query_words(query: &str) -> Vec<WordQuery> {
    let mut out: Vec<WordQuery> = words(&normalize(query))
        .into_iter()
        .map(|w| {
            if w.len() < 3 {
                WordQuery::Prefix(prefix(&w, w.len()))
            } else {
                WordQuery::Trigrams(trigrams(&w).collect())
            }
        })
        .collect();
    out.dedup();
    out
}

/// Every term indexed for a text, with its position (see the module docs).
pub fn index_terms(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut position = 0;
    for word in words(&normalize(text)) {
        for len in 1..=word.len().min(2) {
            out.push((prefix(&word, len), position));
        }
        for (i, gram) in trigrams(&word).enumerate() {
            out.push((gram, position + i));
        }
        position += word.len() + WORD_GAP;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the index answers: every query word matches, a prefix as a
    /// term, trigrams as a phrase at consecutive positions.
    fn matches(text: &str, query: &str) -> bool {
        let indexed = index_terms(text);
        let at = |term: &str, pos: usize| indexed.iter().any(|(t, p)| t == term && *p == pos);
        query_words(query).iter().all(|q| match q {
            WordQuery::Prefix(p) => indexed.iter().any(|(t, _)| t == p),
            WordQuery::Trigrams(grams) => indexed
                .iter()
                .filter(|(t, _)| *t == grams[0])
                .any(|(_, start)| grams.iter().enumerate().all(|(i, g)| at(g, start + i))),
        })
    }

    #[test]
    fn ascii_takes_the_short_way_to_the_same_text() {
        let every_ascii: String = (0u8..128).map(char::from).collect();
        assert_eq!(normalize(&every_ascii), fold(&every_ascii));
        assert_eq!(normalize("Hello, World 42!"), "hello, world 42!");
    }

    #[test]
    fn case_and_diacritics_are_ignored() {
        assert!(matches("Café crème", "CAFE"));
        assert!(matches("cafe", "café"));
        assert!(matches("Ærø straße", "strasse"));
        assert!(matches("Ærø", "aero"));
    }

    #[test]
    fn prefixes_match_from_one_character_and_infixes_from_three() {
        assert!(matches("Hello", "h"));
        assert!(matches("Hello", "he"));
        assert!(matches("Hello", "hel"));
        assert!(matches("Hello", "ello"));
        assert!(matches("Hello", "llo"));
        assert!(!matches("Hello", "el"), "a 2-letter infix is not a match");
        assert!(!matches("Hello", "hellos"));
    }

    #[test]
    fn long_words_match_whole_or_by_any_part() {
        let word = "pneumonoultramicroscopicsilicovolcanoconiosis";
        assert!(matches(word, word));
        assert!(matches(word, "microscopic"));
        assert!(matches(word, &word[..30]));
        assert!(!matches(word, "microscopy"));
    }

    #[test]
    fn a_phrase_of_trigrams_never_spans_two_words() {
        // "the" ends one word and "hen" starts the next: "then" is in
        // neither word.
        assert!(!matches("bathe hens", "then"));
        assert!(matches("bathe hens", "hen"));
        // All trigrams present, but not consecutively in one word.
        assert!(!matches("hell lloyd", "hello"));
    }

    #[test]
    fn arabic_forms_tashkeel_and_tatweel_are_normalised() {
        assert!(matches("أَحْمَد", "احمد"));
        assert!(matches("احمد", "إحمد"));
        assert!(matches("آمن", "امن"));
        assert!(matches("مـــرحبا", "مرحبا"));
        assert!(matches("مدرسة", "مدرسه"));
    }

    #[test]
    fn cjk_splits_per_character_and_emoji_are_separators() {
        assert_eq!(
            query_words("你好世界"),
            ["^你", "^好", "^世", "^界"].map(|p| WordQuery::Prefix(p.into()))
        );
        assert!(matches("我爱你好世界 🎉🎉", "你好"));
        assert!(matches("party🎉time", "time"));
        assert!(index_terms("🎉🎉🎉").is_empty());
        assert!(query_words("🎉").is_empty());
    }

    #[test]
    fn a_huge_word_is_cut_rather_than_exploding() {
        let terms = index_terms(&"a".repeat(10_000));
        // Chunks of 255: 2 prefixes and 253 trigrams each.
        assert_eq!(terms.len(), 39 * 255 + (2 + 10_000 % 255 - 2));
    }
}
