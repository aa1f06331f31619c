//! A search on the embedded index: each query word one required clause, a
//! prefix term or the phrase of its trigrams, best match first.
use super::*;

impl TantivyIndex {
    pub(super) fn search_blocking(
        &self,
        chat: ChatKey,
        query: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<SearchPage> {
        let words = text::query_words(query);
        if words.is_empty() || limit == 0 {
            return Ok(SearchPage::default());
        }
        // The chat only filters: scoring it would add the same constant to
        // every hit.
        let in_chat = TermQuery::new(
            Term::from_field_text(self.fields.chat, &chat.term()),
            IndexRecordOption::Basic,
        );
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(ConstScoreQuery::new(Box::new(in_chat), 0.0)),
        )];
        let term = |t: &str| Term::from_field_text(self.fields.grams, t);
        for word in &words {
            let query: Box<dyn Query> = match word {
                WordQuery::Prefix(p) => {
                    Box::new(TermQuery::new(term(p), IndexRecordOption::WithFreqs))
                }
                WordQuery::Trigrams(grams) if grams.len() == 1 => Box::new(TermQuery::new(
                    term(&grams[0]),
                    IndexRecordOption::WithFreqs,
                )),
                WordQuery::Trigrams(grams) => {
                    Box::new(PhraseQuery::new(grams.iter().map(|g| term(g)).collect()))
                }
            };
            clauses.push((Occur::Must, query));
        }
        let query = BooleanQuery::new(clauses);
        let collector =
            TopDocs::with_limit(limit + 1).tweak_score(move |segment: &SegmentReader| {
                let numbers = segment.fast_fields().i64("number").ok();
                move |doc, score| {
                    let number = numbers.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
                    match after {
                        Some(c) if !c.precedes(score, number) => (f32::NEG_INFINITY, i64::MIN),
                        _ => (score, number),
                    }
                }
            });
        let searcher = self.live().reader.searcher();
        let top: Vec<((f32, i64), DocAddress)> =
            searcher.search(&query, &collector).map_err(err)?;
        let mut page = SearchPage::default();
        let mut last = None;
        for ((score, number), addr) in top {
            if score == f32::NEG_INFINITY && number == i64::MIN {
                continue;
            }
            if page.hits.len() == limit {
                page.next_after = last;
                break;
            }
            let doc: TantivyDocument = searcher.doc(addr).map_err(err)?;
            page.hits.extend(self.row(&doc));
            last = Some(Cursor { score, number });
        }
        Ok(page)
    }
}
