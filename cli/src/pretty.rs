//! JSON laid out for people, from JSON text: the layout of `serde_json`'s pretty printer (two
//! spaces a level, `"key": value`, `[]` and `{}` when empty) without building a value. Lists
//! of documents arrive as megabytes of compact JSON (see `wf_store::Store::list_stored`); a
//! byte pass is several times cheaper than decoding them to encode them again.

/// The bytes that end a number or a literal.
const STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut k = 0;
    let bytes = b"\"{}[],: \t\r\n";
    while k < bytes.len() {
        table[bytes[k] as usize] = true;
        k += 1;
    }
    table
};

/// `json`, valid JSON text, laid out as `serde_json::to_string_pretty` lays out its value,
/// with a newline at the end.
pub(crate) fn pretty_json(json: &str) -> String {
    let b = json.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + b.len() / 2 + 1);
    const SPACES: &[u8] = &[b' '; 64];
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        let mut n = 2 * depth;
        while n > 0 {
            let k = n.min(SPACES.len());
            out.extend_from_slice(&SPACES[..k]);
            n -= k;
        }
    };
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => {
                let end = string_end(b, i);
                out.extend_from_slice(&b[i..end]);
                i = end;
                continue;
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                out.push(c);
                if b.get(j) == Some(&close) {
                    out.push(close);
                    i = j + 1;
                    continue;
                }
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(b',');
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            c if c.is_ascii_whitespace() => {}
            _ => {
                // A number or a literal: copied up to the next structural byte.
                let end = b[i..]
                    .iter()
                    .position(|&c| STRUCTURAL[c as usize])
                    .map_or(b.len(), |k| i + k);
                out.extend_from_slice(&b[i..end]);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push(b'\n');
    // Only whole strings and ASCII were copied from a `str`.
    String::from_utf8(out).expect("copied from a str at character boundaries")
}

/// Where the string starting at `b[start]` (its opening quote) ends: after its closing quote.
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(k) = memchr::memchr2(b'"', b'\\', &b[i..]) {
        if b[i + k] == b'"' {
            return i + k + 1;
        }
        i += k + 2;
        if i >= b.len() {
            break;
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::pretty_json;
    use serde_json::json;

    #[test]
    fn lays_json_out_as_serde_json_does() {
        let values = [
            json!([]),
            json!({}),
            json!([{"a": [], "b": {}, "c": [1, 2.5, -3e-7, true, null]}]),
            json!({"s": "quote \" backslash \\ brace { comma , colon : é ✓ \u{1}", "n": {"m": {"k": [[], [{}]]}}}),
            json!("a lone string"),
            json!(42),
        ];
        let mut deep = json!([1]);
        for _ in 0..40 {
            deep = json!({"k": deep});
        }
        for v in values.into_iter().chain([deep]) {
            let compact = serde_json::to_string(&v).unwrap();
            let expected = format!("{}\n", serde_json::to_string_pretty(&v).unwrap());
            assert_eq!(pretty_json(&compact), expected, "{compact}");
            // Already pretty text comes out the same.
            assert_eq!(pretty_json(&expected), expected, "{compact}");
        }
    }

    #[test]
    fn a_stored_document_comes_out_as_its_decoded_form_would() {
        let doc = wf_core::chain::new_assignment(
            "a1".into(),
            "ns",
            "north star \"quoted\" { , : }".into(),
            10,
            false,
            1_000,
        );
        let stored = serde_json::to_string(&doc).unwrap();
        let expected = format!("{}\n", serde_json::to_string_pretty(&doc).unwrap());
        assert_eq!(pretty_json(&stored), expected);
    }
}
