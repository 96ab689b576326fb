//! `_queryFilter` parsing: no input panics or overflows the stack, and whatever parses
//! prints (`Display`) to text that parses back to the same tree.

#![no_main]

use idm_gateway::crest::filter::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Filters arrive URL-decoded as UTF-8 strings; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = parse(text) {
        let printed = filter.to_string();
        assert_eq!(
            parse(&printed).as_ref(),
            Ok(&filter),
            "{text:?} printed as {printed:?}"
        );
    }
});
