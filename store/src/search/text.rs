//! How the embedded backend turns text into terms, mirroring the
//! Elasticsearch analyzers in [`super::elastic::mapping`] so both backends
//! answer the same queries the same way.
//!
//! A text is normalised (lowercase, diacritics and Arabic tashkeel and
//! tatweel removed, alef forms unified), then split into words. An indexed
//! word yields the terms a query word may match it by:
//! - its 1- and 2-character prefixes (short query words match by prefix);
//! - every substring of 3 to [`MAX_GRAM`] characters (longer query words
//!   match by prefix or infix, a prefix being an infix at position 0);
//! - the whole word when it is longer than that, so a long query word still
//!   matches the same word exactly.
use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

/// The longest n-gram indexed; Elasticsearch's `max_gram` is the same.
pub const MAX_GRAM: usize = 20;
/// Words are cut at this many characters, as Elasticsearch's standard
/// tokenizer does, so one enormous "word" cannot explode the index.
const MAX_WORD: usize = 255;

/// Lowercases and strips what the analyzers strip. Decomposing first turns
/// "é" into "e" plus a combining accent and "أ" into "ا" plus a combining
/// hamza, so dropping combining marks handles Latin diacritics, Arabic
/// tashkeel and the hamza-seated alef forms in one rule.
pub fn normalize(text: &str) -> String {
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

/// The terms a query matches against: one per word.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = words(&normalize(query))
        .into_iter()
        .map(|w| w.into_iter().collect())
        .collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

/// Every term indexed for a text (see the module docs).
pub fn index_terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in words(&normalize(text)) {
        let n = word.len();
        for len in 1..=n.min(2) {
            out.push(word[..len].iter().collect());
        }
        for len in 3..=n.min(MAX_GRAM) {
            for start in 0..=n - len {
                out.push(word[start..start + len].iter().collect());
            }
        }
        if n > MAX_GRAM {
            out.push(word.iter().collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(text: &str, query: &str) -> bool {
        let indexed = index_terms(text);
        query_terms(query).iter().all(|t| indexed.contains(t))
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
    fn long_words_match_whole_or_by_a_short_enough_part() {
        let word = "pneumonoultramicroscopicsilicovolcanoconiosis";
        assert!(matches(word, word));
        assert!(matches(word, "microscopic"));
        assert!(
            !matches(word, &word[..30]),
            "longer than MAX_GRAM and not whole"
        );
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
        assert_eq!(query_terms("你好世界"), vec!["世", "你", "好", "界"]);
        assert!(matches("我爱你好世界 🎉🎉", "你好"));
        assert!(matches("party🎉time", "time"));
        assert!(index_terms("🎉🎉🎉").is_empty());
    }

    #[test]
    fn a_huge_word_is_cut_rather_than_exploding() {
        let terms = index_terms(&"a".repeat(10_000));
        // 40 chunks of 255: per chunk 2 prefixes, 18 n-gram lengths, one whole.
        assert!(terms.len() < 40 * (2 + 18 * 256 + 1), "{}", terms.len());
    }
}
