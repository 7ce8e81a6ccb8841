//! Label selectors, matched as Kubernetes defines them, in one place: the
//! workloads' health and the page's objects tree match pods with
//! [`Selector::matches`]; port-forward hands the same selector to the API
//! server as [`Selector::query`].
//!
//! Kubernetes' rules (`metav1.LabelSelectorAsSelector`): every `matchLabels`
//! pair and every `matchExpressions` requirement must hold; `In` needs the
//! key with one of the values, `NotIn` the key absent or with none of them,
//! `Exists` the key, `DoesNotExist` its absence. A missing selector selects
//! nothing, an empty one (`{}`) everything, and an invalid one (an unknown
//! operator, `In` without values, `Exists` with some) nothing, where the API
//! server would refuse it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
pub use kube::core::Expression;
use kube::core::SelectorExt as _;

/// A label selector: which objects (pods, mostly) it selects. The matching
/// and the query syntax are kube's ([`kube::core::Selector`]); this adds
/// what kube leaves to its caller: a missing or invalid selector selects
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selector {
    /// Selects nothing: no selector, or an invalid one.
    #[default]
    Nothing,
    /// Selects what meets every expression (none: everything).
    All(kube::core::Selector),
}

impl Selector {
    /// A workload's `spec.selector` (`None`: the workload has none).
    pub fn of(selector: Option<&LabelSelector>) -> Selector {
        let Some(s) = selector else {
            return Selector::Nothing;
        };
        let mut all: Vec<Expression> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Expression::Equal(k.clone(), v.clone()))
            .collect();
        for e in s.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let key = e.key.clone();
            all.push(match (e.operator.as_str(), values.is_empty()) {
                ("In", false) => Expression::In(key, values),
                ("NotIn", false) => Expression::NotIn(key, values),
                ("Exists", true) => Expression::Exists(key),
                ("DoesNotExist", true) => Expression::DoesNotExist(key),
                // The API server refuses such a selector (kube's conversion
                // lets some through): it selects nothing.
                _ => return Selector::Nothing,
            });
        }
        Selector::All(all.into_iter().collect())
    }

    /// A Service's `spec.selector` (plain `key: value` pairs). A Service
    /// without one, or with an empty one, selects no pods (Kubernetes then
    /// manages no endpoints for it).
    pub fn of_service(selector: Option<&BTreeMap<String, String>>) -> Selector {
        match selector {
            Some(s) if !s.is_empty() => Selector::All(s.clone().into_iter().collect()),
            _ => Selector::Nothing,
        }
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::All(all) => all.matches(labels),
        }
    }

    /// The same selector in the API's `labelSelector` syntax (`app=web,tier
    /// in (a,b),!canary`), for a list the API server filters; `None` when
    /// it selects nothing (there is nothing to ask for).
    pub fn query(&self) -> Option<String> {
        match self {
            Selector::Nothing => None,
            Selector::All(all) => Some(all.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        exprs: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }
    }

    /// Kubernetes' rules, one row each: the selector, the query the API
    /// server is sent, and which label sets it selects.
    #[test]
    fn selectors_match_as_kubernetes_defines_them() {
        let web = labels(&[("app", "web")]);
        let web_a = labels(&[("app", "web"), ("tier", "a")]);
        let web_c = labels(&[("app", "web"), ("tier", "c")]);
        let canary = labels(&[("app", "web"), ("canary", "")]);
        let none = labels(&[]);
        let sets = [&web, &web_a, &web_c, &canary, &none];
        #[allow(clippy::type_complexity)]
        let rows: Vec<(&str, Option<LabelSelector>, Option<&str>, [bool; 5])> = vec![
            ("no selector", None, None, [false; 5]),
            (
                "empty: everything",
                Some(selector(&[], vec![])),
                Some(""),
                [true; 5],
            ),
            (
                "matchLabels",
                Some(selector(&[("app", "web")], vec![])),
                Some("app=web"),
                [true, true, true, true, false],
            ),
            (
                "In",
                Some(selector(&[], vec![expr("tier", "In", &["a", "b"])])),
                Some("tier in (a,b)"),
                [false, true, false, false, false],
            ),
            (
                "NotIn: absent counts",
                Some(selector(&[], vec![expr("tier", "NotIn", &["a", "b"])])),
                Some("tier notin (a,b)"),
                [true, false, true, true, true],
            ),
            (
                "Exists",
                Some(selector(&[], vec![expr("canary", "Exists", &[])])),
                Some("canary"),
                [false, false, false, true, false],
            ),
            (
                "DoesNotExist",
                Some(selector(&[], vec![expr("canary", "DoesNotExist", &[])])),
                Some("!canary"),
                [true, true, true, false, true],
            ),
            (
                "labels and expressions together",
                Some(selector(
                    &[("app", "web")],
                    vec![
                        expr("tier", "NotIn", &["a"]),
                        expr("canary", "DoesNotExist", &[]),
                    ],
                )),
                Some("app=web,tier notin (a),!canary"),
                [true, false, true, false, false],
            ),
            (
                "unknown operator: invalid",
                Some(selector(&[], vec![expr("tier", "Gt", &["1"])])),
                None,
                [false; 5],
            ),
            (
                "In without values: invalid",
                Some(selector(&[], vec![expr("tier", "In", &[])])),
                None,
                [false; 5],
            ),
            (
                "Exists with values: invalid",
                Some(selector(&[], vec![expr("tier", "Exists", &["a"])])),
                None,
                [false; 5],
            ),
        ];
        for (what, s, query, expected) in rows {
            let s = Selector::of(s.as_ref());
            assert_eq!(s.query().as_deref(), query, "{what}");
            let got: Vec<bool> = sets.iter().map(|l| s.matches(l)).collect();
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn a_service_without_a_selector_selects_no_pods() {
        assert_eq!(Selector::of_service(None), Selector::Nothing);
        assert_eq!(
            Selector::of_service(Some(&BTreeMap::new())),
            Selector::Nothing
        );
        let s = Selector::of_service(Some(&labels(&[("app", "web"), ("tier", "a")])));
        assert_eq!(s.query().as_deref(), Some("app=web,tier=a"));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }
}
