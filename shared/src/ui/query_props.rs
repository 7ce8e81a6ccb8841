//! Property tests of the page's query parameters: whatever a browser (or a
//! page on another site) puts in a URL is parsed or refused without a
//! panic, and a message never reaches the page as markup.

use axum::extract::Query;
use axum::http::Uri;
use proptest::prelude::*;

use super::{IndexQuery, TokenQuery, message};

/// A query string as URLs carry them: pairs, escapes, stray `&`, `=`, `%`.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z%=&+;#?0-9A-F]{0,40}",
        "(token|msg|x)=[^&#\\s]{0,20}(&(token|msg|token)=[%0-9a-fA-F<>\"']{0,20}){0,3}",
        any::<String>().prop_map(|s| s.replace(['#', ' '], "")),
    ]
}

fn uri(path: &str, q: &str) -> Option<Uri> {
    format!("{path}?{q}").parse().ok()
}

proptest! {
    #![proptest_config(crate::proptests::config(512))]

    #[test]
    fn any_query_string_parses_or_is_refused_without_panicking(q in query()) {
        if let Some(u) = uri("/", &q) {
            if let Ok(Query(parsed)) = Query::<IndexQuery>::try_from_uri(&u) {
                let _ = message(parsed.msg);
                let _ = parsed.token;
            }
            let _ = Query::<TokenQuery>::try_from_uri(&u);
        }
    }

    #[test]
    fn a_message_is_text_never_markup(m in any::<String>()) {
        let html = message(Some(m));
        // The one element message() writes, and nothing the text could open.
        prop_assert_eq!(html.matches('<').count(), 2, "{}", html);
        prop_assert_eq!(html.matches('>').count(), 2, "{}", html);
        prop_assert!(html.starts_with("<p class=\"msg banner\" role=\"status\">"));
        prop_assert!(html.ends_with("</p>"));
        // Quotes too: only the wrapper's own attributes.
        prop_assert_eq!(html.matches('"').count(), 4, "{}", html);
    }

    #[test]
    fn an_escaped_message_reads_back(m in "[a-z <>&\"'/=]{0,30}") {
        let u = uri("/", &format!("msg={}", urlencode(&m))).ok_or_else(|| TestCaseError::fail("uri"))?;
        let Query(parsed) = Query::<IndexQuery>::try_from_uri(&u).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.msg.as_deref(), Some(m.as_str()));
    }
}

/// Percent-encodes every byte outside `[A-Za-z0-9]`.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
