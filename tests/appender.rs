use std::process::Command;

use crate::common::engine_bin;

fn appender_xml(args: &[&str]) -> String {
    let out = Command::new(engine_bin()).arg("appender").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn param<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.has_tag_name("param") && c.attribute("name") == Some(name))?
        .attribute("value")
}

#[test]
fn appender_file_has_both_user_event_appenders_pointing_at_the_receiver() {
    let xml = appender_xml(&["--host", "ingest.example.com", "--port", "19997"]);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert!(root.has_tag_name("configuration"));
    let appenders: Vec<_> = root.children().filter(|n| n.has_tag_name("appender")).collect();
    assert_eq!(appenders.len(), 2);
    let expected = [
        (
            "EventSession",
            ["Start session for user", "Stop session for user"],
            "/qseow-proxy-session/",
        ),
        (
            "EventConnection",
            ["connection Opened for session", "connection Closed for session"],
            "/qseow-proxy-connection/",
        ),
    ];
    for (node, (name, matches, message_type)) in appenders.iter().zip(expected) {
        assert_eq!(node.attribute("name"), Some(name));
        assert_eq!(node.attribute("type"), Some("log4net.Appender.UdpAppender"));
        let filters: Vec<_> = node.children().filter(|c| c.has_tag_name("filter")).collect();
        assert_eq!(filters.len(), 3, "two string matches and a DenyAllFilter");
        for (f, m) in filters.iter().zip(matches) {
            assert_eq!(f.attribute("type"), Some("log4net.Filter.StringMatchFilter"));
            assert_eq!(param(*f, "stringToMatch"), Some(m));
        }
        assert_eq!(filters[2].attribute("type"), Some("log4net.Filter.DenyAllFilter"));
        assert_eq!(param(*node, "remoteAddress"), Some("ingest.example.com"));
        assert_eq!(param(*node, "remotePort"), Some("19997"));
        assert_eq!(param(*node, "encoding"), Some("utf-8"));
        let layout = node.children().find(|c| c.has_tag_name("layout")).unwrap();
        assert_eq!(layout.attribute("type"), Some("log4net.Layout.PatternLayout"));
        let converter = layout.children().find(|c| c.has_tag_name("converter")).unwrap();
        assert_eq!(param(converter, "name"), Some("hostname"));
        assert_eq!(
            param(converter, "type"),
            Some("Qlik.Sense.Logging.log4net.Layout.Pattern.HostNamePatternConverter")
        );
        assert_eq!(
            param(layout, "conversionpattern").unwrap(),
            format!(
                "{message_type};%hostname;%property{{Command}};%property{{UserDirectory}};%property{{UserId}};\
                 %property{{Origin}};%property{{Context}};%message"
            )
        );
    }
    let logger = root.children().find(|n| n.has_tag_name("logger")).unwrap();
    assert_eq!(logger.attribute("name"), Some("AuditActivity.Proxy"));
    let refs: Vec<_> = logger.children().filter_map(|c| c.attribute("ref")).collect();
    assert_eq!(refs, ["EventSession", "EventConnection"]);
}

#[test]
fn appender_defaults_to_port_9997_and_writes_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("LocalLogConfig.xml");
    let status = Command::new(engine_bin())
        .args([
            "appender",
            "--host",
            "ingest-01.example.com",
            "--output",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let xml = std::fs::read_to_string(out).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let first = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("appender"))
        .unwrap();
    assert_eq!(param(first, "remoteAddress"), Some("ingest-01.example.com"));
    assert_eq!(param(first, "remotePort"), Some("9997"));
}

#[test]
fn appender_refuses_an_empty_host() {
    let out = Command::new(engine_bin())
        .args(["appender", "--host", " "])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
}

#[test]
fn appender_refuses_a_host_that_is_neither_an_address_nor_a_hostname_and_port_0() {
    for args in [
        &["appender", "--host", "ingest 01"][..],
        &["appender", "--host", "a&b<c>"][..],
        &["appender", "--host", "ingest-01", "--port", "0"][..],
    ] {
        let out = Command::new(engine_bin()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let flag = if args.contains(&"--port") { "--port" } else { "--host" };
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let ok = Command::new(engine_bin())
        .args(["appender", "--host", "::1", "--port", "65535"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}
