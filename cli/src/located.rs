//! YAML read into JSON with the line and column of every key, so that a problem found in the JSON
//! (at a key path such as `declared_playbooks[0].steps[2].timeout`) is reported where it is in
//! the file, as a compiler would.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

#[derive(Debug)]
enum Tree {
    Scalar(Value),
    Seq(Vec<Spanned<Tree>>),
    Map(Vec<(Spanned<String>, Spanned<Tree>)>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::Null))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::Number(v.into())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::Scalar(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::String(v)))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            out.push(item);
        }
        Ok(Tree::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value()?;
            out.push((key, value));
        }
        Ok(Tree::Map(out))
    }
}

/// A YAML document as JSON, and where each key path is.
#[derive(Debug)]
pub struct Located {
    pub value: Value,
    places: BTreeMap<String, (u64, u64)>,
}

impl Located {
    pub fn parse(text: &str) -> Result<Located, String> {
        let tree: Spanned<Tree> = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut places = BTreeMap::new();
        let root = (tree.referenced.line(), tree.referenced.column());
        places.insert(String::new(), root);
        let value = walk(&tree.value, "", &mut places);
        Ok(Located { value, places })
    }

    /// Line and column of the key path, or of its nearest parent that has one.
    pub fn place(&self, path: &str) -> (u64, u64) {
        let mut path = path.to_owned();
        loop {
            if let Some(p) = self.places.get(&path) {
                return *p;
            }
            match path.rfind(['.', '[']) {
                Some(i) => path.truncate(i),
                None => return self.places.get("").copied().unwrap_or((1, 1)),
            }
        }
    }
}

fn walk(tree: &Tree, at: &str, places: &mut BTreeMap<String, (u64, u64)>) -> Value {
    match tree {
        Tree::Scalar(v) => v.clone(),
        Tree::Seq(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("{at}[{i}]");
                    places.insert(
                        path.clone(),
                        (item.referenced.line(), item.referenced.column()),
                    );
                    walk(&item.value, &path, places)
                })
                .collect(),
        ),
        Tree::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let path = if at.is_empty() {
                    key.value.clone()
                } else {
                    format!("{at}.{}", key.value)
                };
                places.insert(
                    path.clone(),
                    (key.referenced.line(), key.referenced.column()),
                );
                map.insert(key.value.clone(), walk(&value.value, &path, places));
            }
            Value::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_and_item_knows_its_line_and_column() {
        let text = "name: quell\nplaybooks:\n  - id: one\n    steps:\n      - id: a\n        timeout: 5x\n";
        let l = Located::parse(text).unwrap();
        assert_eq!(l.value["playbooks"][0]["steps"][0]["timeout"], "5x");
        assert_eq!(l.place("playbooks[0].steps[0].timeout"), (6, 9));
        assert_eq!(l.place("playbooks[0].id"), (3, 5));
        assert_eq!(
            l.place("playbooks[0].steps[0].nothing.deeper"),
            l.place("playbooks[0].steps[0]"),
            "a path with no place of its own takes its parent's"
        );
    }
}
