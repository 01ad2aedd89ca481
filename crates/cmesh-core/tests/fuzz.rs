//! Property tests: no input makes `check` panic, and valid specs survive mutation without
//! panics either. (A cargo-fuzz target would need a nightly toolchain; proptest runs on stable
//! in every `cargo test`.)

use cmesh_core::spec::{self, example};
use proptest::prelude::*;

fn check_does_not_panic(text: &str) {
    let checked = spec::check("fuzz", text);
    // Whatever came out is internally consistent.
    let errors = checked.diagnostics.iter().any(|d| d.is_error());
    assert_eq!(checked.spec.is_some(), !errors);
    for d in &checked.diagnostics {
        if let Some(s) = d.span {
            assert!(s.offset + s.len <= text.len(), "span out of bounds: {s:?}");
            assert!(
                text.is_char_boundary(s.offset),
                "span not on a char boundary"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "\\PC{0,400}") {
        check_does_not_panic(&text);
    }

    #[test]
    fn yamlish_text(text in "([a-zA-Z:\\-\\[\\]{},&*!|>'\"#\\. 0-9\\n]){0,300}") {
        check_does_not_panic(&text);
    }

    /// Splice random bytes into the built-in example at a random place.
    #[test]
    fn mutated_example(pos in 0usize..2000, cut in 0usize..40, insert in "\\PC{0,20}") {
        let base = example::builtin();
        let mut pos = pos.min(base.len());
        while !base.is_char_boundary(pos) { pos -= 1; }
        let mut end = (pos + cut).min(base.len());
        while !base.is_char_boundary(end) { end -= 1; }
        let text = format!("{}{}{}", &base[..pos], insert, &base[end..]);
        check_does_not_panic(&text);
    }

    /// Random line deletions and duplications keep the checker total.
    #[test]
    fn shuffled_lines(ops in proptest::collection::vec((0usize..120, any::<bool>()), 0..8)) {
        let mut lines: Vec<String> = example::builtin().lines().map(str::to_owned).collect();
        for (i, dup) in ops {
            if lines.is_empty() { break; }
            let i = i % lines.len();
            if dup { let l = lines[i].clone(); lines.insert(i, l); } else { lines.remove(i); }
        }
        check_does_not_panic(&lines.join("\n"));
    }
}

/// The example parses, re-validates after a round trip through its own generator, and every
/// generated N-cluster spec is valid: a parse/serialise round trip on the model.
#[test]
fn generated_specs_round_trip() {
    for n in [2usize, 3, 7, 40] {
        let o = example::ExampleOptions {
            clusters: n,
            ..Default::default()
        };
        let text = example::generate(&o).unwrap();
        let (s, _) = spec::load("g", &text).unwrap();
        assert_eq!(s.clusters.len(), n);
        let names: std::collections::BTreeSet<_> =
            s.clusters.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names.len(), n);
    }
}
