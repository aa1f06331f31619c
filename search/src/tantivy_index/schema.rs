//! The index's schema, and the tokenizer that indexes a message body as
//! the prefix and trigram terms of `crate::text`.
use super::*;

#[derive(Clone, Copy)]
pub(super) struct Fields {
    pub(super) id: Field,
    pub(super) chat: Field,
    pub(super) grams: Field,
    pub(super) application_id: Field,
    pub(super) chat_number: Field,
    pub(super) number: Field,
    pub(super) version: Field,
    pub(super) body: Field,
    pub(super) created_at: Field,
    pub(super) updated_at: Field,
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let grams = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TERMS_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING),
        chat: b.add_text_field("chat", STRING),
        grams: b.add_text_field("grams", grams),
        application_id: b.add_i64_field("application_id", STORED),
        chat_number: b.add_i64_field("chat_number", STORED),
        number: b.add_i64_field("number", STORED | FAST | INDEXED),
        version: b.add_i64_field("version", STORED | FAST),
        body: b.add_text_field("body", STORED),
        created_at: b.add_i64_field("created_at", STORED),
        updated_at: b.add_i64_field("updated_at", STORED),
    };
    (b.build(), fields)
}

/// The tokenizer of the `grams` field, registered on every index opened.
pub(super) const TERMS_TOKENIZER: &str = "chat_terms";

/// [`text::index_terms`] as a tantivy tokenizer. It runs in tantivy's
/// indexing thread; handing tantivy pre-tokenised strings instead costs a
/// JSON round trip of every token list (measured: ~15% of indexing CPU).
#[derive(Clone, Default)]
pub(super) struct TermsTokenizer;

pub(super) struct Terms {
    tokens: Vec<Token>,
    /// One past the current token; 0 before the first `advance`.
    next: usize,
}

impl TokenStream for Terms {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

impl Tokenizer for TermsTokenizer {
    type TokenStream<'a> = Terms;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> Terms {
        let tokens = text::index_terms(text)
            .into_iter()
            .map(|(text, position)| Token {
                position,
                text,
                ..Token::default()
            })
            .collect();
        Terms { tokens, next: 0 }
    }
}
