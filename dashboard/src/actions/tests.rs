use super::*;

#[test]
fn a_form_keeps_every_selected_id() {
    let f = Fields::parse(b"id=1-0&id=2-0&action=cancel&csrf=x&error=&all=on");
    assert_eq!(f.ids, ["1-0", "2-0"]);
    assert_eq!(f.action().unwrap(), Action::Cancel);
    assert!(f.all);
    assert_eq!(f.error, None, "an empty filter is no filter");
}

#[test]
fn each_state_offers_only_what_it_can_do() {
    assert!(allowed(Action::Cancel, JobState::Pending).is_ok());
    assert!(allowed(Action::RetryNow, JobState::Retrying).is_ok());
    assert!(allowed(Action::Retry, JobState::Dead).is_ok());
    assert!(allowed(Action::Cancel, JobState::InFlight).is_err());
    assert!(allowed(Action::RetryNow, JobState::Pending).is_err());
    assert!(allowed(Action::Discard, JobState::Done).is_err());
}
