use super::counters::ceiling_step;

#[test]
fn small_counters_skip_little_and_busy_ones_write_rarely() {
    assert_eq!(ceiling_step(1), 32);
    assert_eq!(ceiling_step(100), 100);
    assert_eq!(ceiling_step(1_000_000), 4_096);
}
