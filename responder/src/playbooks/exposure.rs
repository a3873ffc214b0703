//! Which security group rules open a sensitive port to the whole internet. Pure: the playbook
//! reads the rules, this decides, and the tests cover every shape a rule can take.

use serde::{Deserialize, Serialize};

/// Ports an open rule must not reach unless configured otherwise: SSH, RDP and common databases
/// (MS SQL, MySQL, PostgreSQL, Oracle, MongoDB, Redis, Elasticsearch, Redshift).
pub const DEFAULT_SENSITIVE_PORTS: &[u16] =
    &[22, 3389, 1433, 3306, 5432, 1521, 27017, 6379, 9200, 5439];

const EVERYWHERE_V4: &str = "0.0.0.0/0";
const EVERYWHERE_V6: &str = "::/0";

/// One ingress rule as EC2 lists it (one CIDR per rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    /// "tcp", "udp", "icmp", "-1" (all), or a protocol number.
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub cidr: Option<String>,
    pub description: Option<String>,
}

impl Rule {
    fn open_to_everyone(&self) -> bool {
        matches!(self.cidr.as_deref(), Some(EVERYWHERE_V4 | EVERYWHERE_V6))
    }

    /// The sensitive ports this rule reaches.
    pub fn reaches(&self, sensitive: &[u16]) -> Vec<u16> {
        let all = || sensitive.to_vec();
        match self.protocol.as_str() {
            "-1" | "all" => all(),
            "tcp" | "udp" | "6" | "17" => {
                // EC2 reports -1 (or nothing) for "all ports" of tcp/udp.
                let from = self.from_port.unwrap_or(-1);
                let to = self.to_port.unwrap_or(-1);
                if from < 0 || to < 0 {
                    return all();
                }
                sensitive
                    .iter()
                    .copied()
                    .filter(|p| (from..=to).contains(&i32::from(*p)))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn describe(&self) -> String {
        let ports = match (self.protocol.as_str(), self.from_port, self.to_port) {
            ("-1" | "all", _, _) => "all traffic".to_owned(),
            (p, Some(f), Some(t)) if f == t => format!("{p} {f}"),
            (p, Some(f), Some(t)) if f >= 0 => format!("{p} {f}-{t}"),
            (p, _, _) => format!("{p} all ports"),
        };
        format!(
            "{} {ports} from {}",
            self.id,
            self.cidr.as_deref().unwrap_or("?")
        )
    }
}

/// The rules to revoke: open to everyone and reaching a sensitive port. Nothing else.
pub fn offending<'a>(rules: &'a [Rule], sensitive: &[u16]) -> Vec<&'a Rule> {
    rules
        .iter()
        .filter(|r| r.open_to_everyone() && !r.reaches(sensitive).is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, protocol: &str, from: i32, to: i32, cidr: &str) -> Rule {
        Rule {
            id: id.into(),
            protocol: protocol.into(),
            from_port: Some(from),
            to_port: Some(to),
            cidr: Some(cidr.into()),
            description: None,
        }
    }

    fn ids(rules: &[Rule]) -> Vec<&str> {
        offending(rules, DEFAULT_SENSITIVE_PORTS)
            .iter()
            .map(|r| r.id.as_str())
            .collect()
    }

    #[test]
    fn ssh_from_anywhere_is_offending_in_both_address_families() {
        assert_eq!(ids(&[rule("a", "tcp", 22, 22, "0.0.0.0/0")]), ["a"]);
        assert_eq!(ids(&[rule("b", "tcp", 22, 22, "::/0")]), ["b"]);
    }

    #[test]
    fn all_traffic_and_ranges_covering_a_sensitive_port_are_offending() {
        let mut all = rule("all", "-1", -1, -1, "0.0.0.0/0");
        all.from_port = None;
        all.to_port = None;
        assert_eq!(ids(&[all]), ["all"]);
        assert_eq!(ids(&[rule("range", "tcp", 20, 30, "0.0.0.0/0")]), ["range"]);
        assert_eq!(ids(&[rule("db", "tcp", 3000, 6000, "::/0")]), ["db"]);
        assert_eq!(
            ids(&[rule("allports", "tcp", -1, -1, "0.0.0.0/0")]),
            ["allports"]
        );
        assert_eq!(ids(&[rule("udp", "17", 3389, 3389, "0.0.0.0/0")]), ["udp"]);
    }

    #[test]
    fn narrow_sources_harmless_ports_and_icmp_are_left_alone() {
        assert!(ids(&[
            rule("https", "tcp", 443, 443, "0.0.0.0/0"),
            rule("office", "tcp", 22, 22, "203.0.113.0/24"),
            rule("vpc", "-1", -1, -1, "10.0.0.0/8"),
            rule("ping", "icmp", 8, -1, "0.0.0.0/0"),
            rule("high", "tcp", 8000, 8999, "0.0.0.0/0"),
        ])
        .is_empty());
    }

    #[test]
    fn configured_ports_replace_the_defaults() {
        let r = [
            rule("web", "tcp", 8080, 8080, "0.0.0.0/0"),
            rule("ssh", "tcp", 22, 22, "0.0.0.0/0"),
        ];
        let found: Vec<&str> = offending(&r, &[8080])
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(found, ["web"]);
    }
}
