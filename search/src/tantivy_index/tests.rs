use super::*;

#[test]
fn an_index_of_another_schema_is_replaced_by_an_empty_one() {
    let dir = std::env::temp_dir().join(format!("chat-tantivy-{}", uuid::Uuid::new_v4()));
    let old = dir.join("old");
    std::fs::create_dir_all(&old).unwrap();
    let mut b = Schema::builder();
    b.add_text_field("something_else", STRING);
    Index::create_in_dir(&old, b.build()).unwrap();
    write_current(&dir, "old").unwrap();

    let index = TantivyIndex::open(&dir).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("CURRENT")).unwrap(),
        FIRST_GENERATION
    );
    let chat = ChatKey {
        application_id: 1,
        chat_number: 1,
    };
    assert_eq!(index.counts_blocking(&[chat]).unwrap(), [0]);
    // A second process opening the directory lands on the same one.
    drop(index);
    TantivyIndex::open(&dir).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("CURRENT")).unwrap(),
        FIRST_GENERATION
    );
    std::fs::remove_dir_all(dir).unwrap();
}
