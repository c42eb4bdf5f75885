//! The Qlik Sense proxy's `LocalLogConfig.xml`: two Log4Net UDP appenders that send every user event to us.
//!
//! Place the file as `C:\ProgramData\Qlik\Sense\Proxy\LocalLogConfig.xml` on every node running the proxy
//! service (reference/PROTOCOLS.md a.5). The proxy picks it up after a while; restarting the proxy service forces
//! it. The appenders, filters and conversion patterns are the ones Butler SOS documents, so the datagrams are
//! exactly what Butler SOS parses; only the receiver address and port are filled in.

/// The default user-event port (Butler SOS's `portUserActivityEvents`).
pub const DEFAULT_PORT: u16 = 9997;

/// One appender: name, the two message filters, and the message type that starts every datagram.
struct Appender {
    name: &'static str,
    comment: &'static str,
    matches: [&'static str; 2],
    message_type: &'static str,
}

const APPENDERS: [Appender; 2] = [
    Appender {
        name: "EventSession",
        comment: "User session events (Start session / Stop session)",
        matches: ["Start session for user", "Stop session for user"],
        message_type: "/qseow-proxy-session/",
    },
    Appender {
        name: "EventConnection",
        comment: "User connection events (connection Opened / Closed)",
        matches: ["connection Opened for session", "connection Closed for session"],
        message_type: "/qseow-proxy-connection/",
    },
];

/// The XML for a receiver at `host:port`. `host` is XML-escaped.
pub fn local_log_config(host: &str, port: u16) -> String {
    let host = xml_escape(host);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<configuration>\n");
    xml.push_str(&format!(
        "    <!-- Written by sense-ingest {}: sends Qlik Sense user events to {host}:{port} over UDP -->\n",
        env!("CARGO_PKG_VERSION")
    ));
    for a in &APPENDERS {
        xml.push_str(&format!("\n    <!-- {} -->\n", a.comment));
        xml.push_str(&format!(
            "    <appender name=\"{}\" type=\"log4net.Appender.UdpAppender\">\n",
            a.name
        ));
        for m in a.matches {
            xml.push_str("        <filter type=\"log4net.Filter.StringMatchFilter\">\n");
            xml.push_str(&format!("            <param name=\"stringToMatch\" value=\"{m}\" />\n"));
            xml.push_str("        </filter>\n");
        }
        xml.push_str("        <filter type=\"log4net.Filter.DenyAllFilter\" />\n");
        xml.push_str(&format!("        <param name=\"remoteAddress\" value=\"{host}\" />\n"));
        xml.push_str(&format!("        <param name=\"remotePort\" value=\"{port}\" />\n"));
        xml.push_str("        <param name=\"encoding\" value=\"utf-8\" />\n");
        xml.push_str("        <layout type=\"log4net.Layout.PatternLayout\">\n");
        xml.push_str("            <converter>\n");
        xml.push_str("                <param name=\"name\" value=\"hostname\" />\n");
        xml.push_str(
            "                <param name=\"type\" value=\"Qlik.Sense.Logging.log4net.Layout.Pattern.HostNamePatternConverter\" />\n",
        );
        xml.push_str("            </converter>\n");
        xml.push_str(&format!(
            "            <param name=\"conversionpattern\" value=\"{};%hostname;%property{{Command}};%property{{UserDirectory}};%property{{UserId}};%property{{Origin}};%property{{Context}};%message\" />\n",
            a.message_type
        ));
        xml.push_str("        </layout>\n");
        xml.push_str("    </appender>\n");
    }
    xml.push_str("\n    <!-- The proxy's audit logger for user activity feeds both appenders -->\n");
    xml.push_str("    <logger name=\"AuditActivity.Proxy\">\n");
    for a in &APPENDERS {
        xml.push_str(&format!("        <appender-ref ref=\"{}\" />\n", a.name));
    }
    xml.push_str("    </logger>\n</configuration>\n");
    xml
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
