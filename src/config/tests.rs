use clap::Parser;

use super::Cli;

fn read_only(args: &[&str]) -> Result<bool, clap::Error> {
    let mut argv = vec!["chat", "serve"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|cli| cli.settings.dashboard_read_only)
}

#[test]
fn booleans_take_every_usual_spelling() {
    for yes in ["1", "true", "yes", "on", "TRUE", "Yes"] {
        assert!(read_only(&["--dashboard-read-only", yes]).unwrap(), "{yes}");
    }
    for no in ["0", "false", "no", "off"] {
        assert!(!read_only(&["--dashboard-read-only", no]).unwrap(), "{no}");
    }
    assert!(
        read_only(&["--dashboard-read-only"]).unwrap(),
        "a bare flag"
    );
    assert!(!read_only(&[]).unwrap(), "the default");
    assert!(read_only(&["--dashboard-read-only", "maybe"]).is_err());
}

#[test]
fn help_lists_the_boolean_spellings() {
    let help = <Cli as clap::CommandFactory>::command().render_long_help();
    assert!(
        help.to_string()
            .contains("boolean: 1/0, true/false, yes/no, on/off")
    );
}
