//! Operational transformation for plain text: an [`Operation`] is a walk over the whole
//! document made of retains, inserts and deletes; [`transform`] and [`compose`] follow the
//! classic ot.js algorithms.
//!
//! Every length and position counts Unicode scalar values (Rust `char`s), never bytes or
//! UTF-16 units; the JavaScript side (`examples/collab/ot.js`) counts code points, which is the
//! same unit. On the wire an operation is a JSON array such as
//! `[{"retain": 5}, {"insert": "hi"}, {"delete": 2}]`.

use serde::{Deserialize, Serialize};

/// One step of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    /// Keep this many characters.
    Retain(usize),
    /// Insert this text.
    Insert(String),
    /// Remove this many characters.
    Delete(usize),
}

/// A change to a whole document: it reads `base_len` characters and leaves `target_len`.
/// Built through [`Operation::retain`], [`Operation::insert`] and [`Operation::delete`], which
/// keep it canonical (no empty steps, neighbours of one kind merged, an insert before a
/// delete at the same place), so equal changes compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    components: Vec<Component>,
    base_len: usize,
    target_len: usize,
}

/// Why an operation could not be applied, transformed or composed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtError {
    /// The operation expects a document of `expected` characters; it has `actual`.
    LengthMismatch {
        /// What the operation reads.
        expected: usize,
        /// What it was given.
        actual: usize,
    },
}

impl std::fmt::Display for OtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OtError::LengthMismatch { expected, actual } => write!(
                f,
                "the operation spans {expected} characters but the document has {actual}"
            ),
        }
    }
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// Splits `text` after `chars` characters.
fn split_chars(text: &str, chars: usize) -> (&str, &str) {
    let at = text
        .char_indices()
        .nth(chars)
        .map_or(text.len(), |(index, _)| index);
    text.split_at(at)
}

impl Operation {
    /// The empty operation (reads and leaves an empty document).
    pub fn new() -> Self {
        Operation::default()
    }

    /// The steps, in order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Characters the operation reads.
    pub fn base_len(&self) -> usize {
        self.base_len
    }

    /// Characters the operation leaves.
    pub fn target_len(&self) -> usize {
        self.target_len
    }

    /// True when it changes nothing.
    pub fn is_noop(&self) -> bool {
        self.components
            .iter()
            .all(|component| matches!(component, Component::Retain(_)))
    }

    /// Appends "keep `count` characters".
    pub fn retain(&mut self, count: usize) -> &mut Self {
        if count == 0 {
            return self;
        }
        self.base_len = self.base_len.saturating_add(count);
        self.target_len = self.target_len.saturating_add(count);
        if let Some(Component::Retain(last)) = self.components.last_mut() {
            *last = last.saturating_add(count);
        } else {
            self.components.push(Component::Retain(count));
        }
        self
    }

    /// Appends "insert `text`".
    pub fn insert(&mut self, text: &str) -> &mut Self {
        if text.is_empty() {
            return self;
        }
        self.target_len = self.target_len.saturating_add(char_len(text));
        let count = self.components.len();
        match self.components.as_mut_slice() {
            [.., Component::Insert(last)] => last.push_str(text),
            [.., Component::Insert(before), Component::Delete(_)] => before.push_str(text),
            [.., Component::Delete(_)] => self
                .components
                .insert(count - 1, Component::Insert(text.to_owned())),
            _ => self.components.push(Component::Insert(text.to_owned())),
        }
        self
    }

    /// Appends "delete `count` characters".
    pub fn delete(&mut self, count: usize) -> &mut Self {
        if count == 0 {
            return self;
        }
        self.base_len = self.base_len.saturating_add(count);
        if let Some(Component::Delete(last)) = self.components.last_mut() {
            *last = last.saturating_add(count);
        } else {
            self.components.push(Component::Delete(count));
        }
        self
    }

    fn push(&mut self, component: Component) {
        match component {
            Component::Retain(count) => self.retain(count),
            Component::Insert(text) => self.insert(&text),
            Component::Delete(count) => self.delete(count),
        };
    }

    /// The operation applied to `doc`.
    pub fn apply(&self, doc: &str) -> Result<String, OtError> {
        let actual = char_len(doc);
        if actual != self.base_len {
            return Err(OtError::LengthMismatch {
                expected: self.base_len,
                actual,
            });
        }
        let mut result = String::with_capacity(doc.len());
        let mut rest = doc;
        for component in &self.components {
            match component {
                Component::Retain(count) => {
                    let (kept, after) = split_chars(rest, *count);
                    result.push_str(kept);
                    rest = after;
                }
                Component::Insert(text) => result.push_str(text),
                Component::Delete(count) => rest = split_chars(rest, *count).1,
            }
        }
        Ok(result)
    }
}

/// What is left of a retain or delete of `count` after `used` characters, or the next step.
fn remainder(
    count: usize,
    used: usize,
    kind: fn(usize) -> Component,
    rest: &mut impl Iterator<Item = Component>,
) -> Option<Component> {
    if count > used {
        Some(kind(count - used))
    } else {
        rest.next()
    }
}

/// Transforms two concurrent operations on the same document into `(a', b')` such that
/// `b'` applied after `a` equals `a'` applied after `b` (TP1). When both insert at one place,
/// `a`'s text comes first.
pub fn transform(a: &Operation, b: &Operation) -> Result<(Operation, Operation), OtError> {
    if a.base_len != b.base_len {
        return Err(OtError::LengthMismatch {
            expected: a.base_len,
            actual: b.base_len,
        });
    }
    let mut a_prime = Operation::new();
    let mut b_prime = Operation::new();
    let mut rest1 = a.components.iter().cloned();
    let mut rest2 = b.components.iter().cloned();
    let mut op1 = rest1.next();
    let mut op2 = rest2.next();
    use Component::{Delete, Insert, Retain};
    loop {
        (op1, op2) = match (op1, op2) {
            (None, None) => break,
            (Some(Insert(text)), other) => {
                b_prime.retain(char_len(&text));
                a_prime.insert(&text);
                (rest1.next(), other)
            }
            (other, Some(Insert(text))) => {
                a_prime.retain(char_len(&text));
                b_prime.insert(&text);
                (other, rest2.next())
            }
            (Some(Retain(x)), Some(Retain(y))) => {
                let both = x.min(y);
                a_prime.retain(both);
                b_prime.retain(both);
                (
                    remainder(x, both, Retain, &mut rest1),
                    remainder(y, both, Retain, &mut rest2),
                )
            }
            (Some(Delete(x)), Some(Delete(y))) => {
                // Both removed the same characters: nothing left to do on either side.
                let both = x.min(y);
                (
                    remainder(x, both, Delete, &mut rest1),
                    remainder(y, both, Delete, &mut rest2),
                )
            }
            (Some(Delete(x)), Some(Retain(y))) => {
                let both = x.min(y);
                a_prime.delete(both);
                (
                    remainder(x, both, Delete, &mut rest1),
                    remainder(y, both, Retain, &mut rest2),
                )
            }
            (Some(Retain(x)), Some(Delete(y))) => {
                let both = x.min(y);
                b_prime.delete(both);
                (
                    remainder(x, both, Retain, &mut rest1),
                    remainder(y, both, Delete, &mut rest2),
                )
            }
            // Unreachable with equal base lengths; kept as an error rather than a panic.
            (None, Some(_)) | (Some(_), None) => {
                return Err(OtError::LengthMismatch {
                    expected: a.base_len,
                    actual: b.base_len,
                });
            }
        };
    }
    Ok((a_prime, b_prime))
}

/// One operation with the effect of `a` followed by `b`.
pub fn compose(a: &Operation, b: &Operation) -> Result<Operation, OtError> {
    if a.target_len != b.base_len {
        return Err(OtError::LengthMismatch {
            expected: b.base_len,
            actual: a.target_len,
        });
    }
    let mut composed = Operation::new();
    let mut rest1 = a.components.iter().cloned();
    let mut rest2 = b.components.iter().cloned();
    let mut op1 = rest1.next();
    let mut op2 = rest2.next();
    use Component::{Delete, Insert, Retain};
    loop {
        (op1, op2) = match (op1, op2) {
            (None, None) => break,
            (Some(Delete(count)), other) => {
                composed.delete(count);
                (rest1.next(), other)
            }
            (other, Some(Insert(text))) => {
                composed.insert(&text);
                (other, rest2.next())
            }
            (Some(Retain(x)), Some(Retain(y))) => {
                let both = x.min(y);
                composed.retain(both);
                (
                    remainder(x, both, Retain, &mut rest1),
                    remainder(y, both, Retain, &mut rest2),
                )
            }
            (Some(Insert(text)), Some(Delete(y))) => {
                // `b` deletes what `a` inserted: neither survives.
                let len = char_len(&text);
                let both = len.min(y);
                let left = split_chars(&text, both).1;
                (
                    if left.is_empty() {
                        rest1.next()
                    } else {
                        Some(Insert(left.to_owned()))
                    },
                    remainder(y, both, Delete, &mut rest2),
                )
            }
            (Some(Insert(text)), Some(Retain(y))) => {
                let (kept, left) = split_chars(&text, y);
                composed.insert(kept);
                let used = char_len(kept);
                (
                    if left.is_empty() {
                        rest1.next()
                    } else {
                        Some(Insert(left.to_owned()))
                    },
                    remainder(y, used, Retain, &mut rest2),
                )
            }
            (Some(Retain(x)), Some(Delete(y))) => {
                let both = x.min(y);
                composed.delete(both);
                (
                    remainder(x, both, Retain, &mut rest1),
                    remainder(y, both, Delete, &mut rest2),
                )
            }
            (None, Some(_)) | (Some(_), None) => {
                return Err(OtError::LengthMismatch {
                    expected: b.base_len,
                    actual: a.target_len,
                });
            }
        };
    }
    Ok(composed)
}

/// The wire form of one step: `{"retain": n}`, `{"insert": "text"}` or `{"delete": n}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum WireComponent {
    Retain(usize),
    Insert(String),
    Delete(usize),
}

impl Serialize for Operation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.components.len()))?;
        for component in &self.components {
            let wire = match component {
                Component::Retain(count) => WireComponent::Retain(*count),
                Component::Insert(text) => WireComponent::Insert(text.clone()),
                Component::Delete(count) => WireComponent::Delete(*count),
            };
            seq.serialize_element(&wire)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Vec::<WireComponent>::deserialize(deserializer)?;
        let mut operation = Operation::new();
        for component in wire {
            operation.push(match component {
                WireComponent::Retain(count) => Component::Retain(count),
                WireComponent::Insert(text) => Component::Insert(text),
                WireComponent::Delete(count) => Component::Delete(count),
            });
        }
        Ok(operation)
    }
}

#[cfg(test)]
mod tests;
