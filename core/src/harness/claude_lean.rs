//! The fast path of Claude's stream: its two commonest and largest events — assistant turns
//! and tool results — read into borrowed, typed views that skip what wf does not use (long
//! tool outputs are scanned, never copied). Anything else, and any line these views do not
//! fit, goes to the general parser over `serde_json::Value`, which stays the definition: the
//! two give the same events (tested on the recorded transcripts).

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{shorten, AgentEvent};
use crate::model::Usage;

/// The parts of a line the fast path reads.
#[derive(Deserialize)]
struct Lean<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<LeanMessage<'a>>,
}

#[derive(Deserialize)]
struct LeanMessage<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Blocks<'a>>,
    #[serde(default)]
    usage: Option<LeanUsage>,
}

#[derive(Deserialize)]
struct LeanUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
}

/// A message's content: its blocks when it is a list; anything else holds none.
struct Blocks<'a>(Vec<Block<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Blocks<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Blocks<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("message content")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::new();
                while let Some(b) = seq.next_element::<Block<'a>>()? {
                    blocks.push(b);
                }
                Ok(Blocks(blocks))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Blocks(Vec::new()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Blocks(Vec::new()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Blocks(Vec::new()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Blocks(Vec::new()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Blocks(Vec::new()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Blocks(Vec::new()))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Blocks(Vec::new()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The events of an `assistant` or `user` line, when the fast path can read it; `None`: the
/// general parser decides (another type, or a shape these views do not fit).
pub(super) fn events(line: &str) -> Option<Vec<AgentEvent>> {
    let lean: Lean<'_> = serde_json::from_str(line).ok()?;
    match lean.kind.as_ref() {
        "assistant" => assistant(lean.message?),
        "user" => Some(user(lean.message)),
        _ => None,
    }
}

fn assistant(m: LeanMessage<'_>) -> Option<Vec<AgentEvent>> {
    let mut out = Vec::new();
    for block in m.content.map(|b| b.0).unwrap_or_default() {
        match block.kind.as_deref() {
            Some("text") => {
                if let Some(t) = block.text {
                    out.push(AgentEvent::Text(t.into_owned()));
                }
            }
            Some("tool_use") => {
                let input = match block.input {
                    Some(raw) => Some(serde_json::from_str::<serde_json::Value>(raw.get()).ok()?),
                    None => None,
                };
                out.push(AgentEvent::ToolUse {
                    id: block.id.map(Cow::into_owned).unwrap_or_default(),
                    name: block
                        .name
                        .map_or_else(|| "tool".to_string(), Cow::into_owned),
                    input: super::claude::tool_input(input.as_ref()),
                });
            }
            _ => {}
        }
    }
    if let Some(u) = m.usage {
        let n = |v: Option<u64>| v.unwrap_or(0);
        let cached = n(u.cache_read_input_tokens);
        out.push(AgentEvent::TurnUsage {
            message_id: m.id.map(Cow::into_owned),
            usage: Usage {
                input_tokens: n(u.input_tokens) + cached + n(u.cache_creation_input_tokens),
                output_tokens: n(u.output_tokens),
                cost_usd: None,
            },
            cached_input_tokens: cached,
        });
    }
    Some(out)
}

fn user(m: Option<LeanMessage<'_>>) -> Vec<AgentEvent> {
    let blocks = m.and_then(|m| m.content).map(|b| b.0).unwrap_or_default();
    blocks
        .into_iter()
        .filter(|b| b.kind.as_deref() == Some("tool_result"))
        .map(|b| AgentEvent::ToolResult {
            id: b.tool_use_id.map(Cow::into_owned).unwrap_or_default(),
            is_error: b.is_error.unwrap_or(false),
            output: tool_output(b.content),
        })
        .collect()
}

/// A tool's output, shortened: a string is read without being copied; anything else goes
/// through the general rendering.
fn tool_output(raw: Option<&RawValue>) -> String {
    let Some(raw) = raw else {
        return String::new();
    };
    let text = raw.get();
    if let Some(body) = text.strip_prefix('"') {
        // Only the first characters are kept: when they hold no escape, they are the string's
        // own bytes, and the rest (already checked by the parser) is not read again.
        let n = super::TOOL_OUTPUT_CHARS;
        let mut cut = None;
        for (i, (at, c)) in body.char_indices().enumerate() {
            if c == '\\' || c == '"' {
                break;
            }
            if i == n {
                cut = Some(at);
                break;
            }
        }
        if let Some(at) = cut {
            let mut out = String::with_capacity(at + '…'.len_utf8());
            out.push_str(&body[..at]);
            out.push('…');
            return out;
        }
        if let Ok(s) = serde_json::from_str::<Cow<'_, str>>(text) {
            return shorten(&s, n);
        }
    }
    let value = serde_json::from_str::<serde_json::Value>(raw.get()).ok();
    super::event::tool_output(value.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tool_outputs_are_cut_as_the_general_parser_cuts_them() {
        let long = "é".repeat(400);
        for content in [
            serde_json::json!(long),
            serde_json::json!(format!("line one\n{long}")),
            serde_json::json!(format!("{}\"quoted\"", "x".repeat(299))),
            serde_json::json!("short"),
            serde_json::json!("x".repeat(300)),
            serde_json::json!([{"type": "text", "text": long}]),
            serde_json::json!(null),
        ] {
            let raw = serde_json::value::to_raw_value(&content).unwrap();
            assert_eq!(
                tool_output(Some(&raw)),
                super::super::event::tool_output(Some(&content)),
                "{content}"
            );
        }
    }
}
