//! The sim's reading of AppSync's AWSDateTime, against AppSync's documented forms.

use tiketo_sim::aws_datetime;

#[test]
fn aws_datetime_takes_what_appsync_takes() {
    for s in [
        "1930-01-01T16:00-07:00",
        "1930-01-01T16:00:00-07:00",
        "1970-01-01T12:00:00.2Z",
        "1970-01-01T12:00:00.123456789Z",
        "1970-01-01T12:00Z",
        "1970-01-01T12:00:00+05:30:10",
        "2099-12-31t23:59:59z",
    ] {
        assert!(aws_datetime(s).is_some(), "{s}");
    }
    assert_eq!(
        aws_datetime("1970-01-01T12:00:00+05:30:10").map(|t| t.unix_timestamp()),
        Some(12 * 3600 - (5 * 3600 + 30 * 60 + 10))
    );
    for s in [
        "1970-01-01T12:00:00",
        "1970-01-01",
        "1970-01-01 12:00:00Z",
        "1970-01-01T12:00:00+0530",
        "1970-01-01T12:00:00+05",
        "1970-01-01T12:00:00.1234567890Z",
        "1970-01-01T12:00.5Z",
        "1970-01-01T24:00:00Z",
        "2023-02-29T00:00:00Z",
        "1970-01-01T12:00:00+19:00",
        "1970-01-01T12:00:00+05:60",
        "9999-12-31T23:00:00-05:00",
        "tomorrow",
    ] {
        assert!(aws_datetime(s).is_none(), "{s}");
    }
}
