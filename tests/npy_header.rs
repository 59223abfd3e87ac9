//! The `.npy` header parser against NumPy: each header below was given to
//! NumPy 2.4 (`np.lib.format` reading the magic, checking the version and
//! reading the header dict, as `np.load` does) and its verdict recorded.
//! The crate must agree, except where noted: headers NumPy reads but
//! whose array `np.load` then cannot make (a negative or impossible
//! dimension), and dtypes the crate does not support.

use std::path::Path;

use gpulanes::npy::{Dtype, parse_header};

/// (case, version, header dict text, NumPy reads the header, the crate
/// accepts it).
type Case = (&'static str, (u8, u8), &'static [u8], bool, bool);

const CASES: &[Case] = &[
    ("canonical", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("canonical 2-D", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", true, true),
    ("version 2.0", (2, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("version 3.0", (3, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("minor version 1", (1, 1), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("version 4.0", (4, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("shape int not tuple", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5), }", false, false),
    ("leading zeros", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (00005,), }", false, false),
    ("zeros only", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (000,), }", true, true),
    ("u prefix", (1, 0), b"{'descr': u'<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("r prefix", (1, 0), b"{'descr': r'<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("U and R prefixes", (1, 0), b"{U'descr': R'<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("b prefix descr", (1, 0), b"{'descr': b'<f4', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("b prefix key", (1, 0), b"{b'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("f prefix", (1, 0), b"{'descr': f'<f4', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("unary plus", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (+5,), }", true, true),
    ("double plus", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (++5,), }", false, false),
    ("minus zero", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (-0,), }", true, true),
    ("negative", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (-5,), }", true, false), // np.load then fails: negative dimensions
    ("addition", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (2+3,), }", false, false),
    ("parenthesised dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': ((5),), }", true, true),
    ("doubly parenthesised dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (((5)),), }", true, true),
    ("parenthesised shape tuple", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': ((5,)), }", true, true),
    ("parenthesised bool", (1, 0), b"{'descr': '<f4', 'fortran_order': (False), 'shape': (5,), }", true, true),
    ("parenthesised descr", (1, 0), b"{'descr': ('<f4'), 'fortran_order': False, 'shape': (5,), }", true, true),
    ("parenthesised key", (1, 0), b"{('descr'): '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("signed parenthesised", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (+(5),), }", true, true),
    ("string escapes", (1, 0), b"{'descr': '\\x3cf\\x34', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("unicode escape", (1, 0), b"{'descr': '\\u003cf4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("octal escape", (1, 0), b"{'d\\145scr': '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("raw backslash", (1, 0), b"{'descr': r'<f4\\x', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("double quotes", (1, 0), b"{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (5,)}", true, true),
    ("triple quotes", (1, 0), b"{'''descr''': '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("concatenated strings", (1, 0), b"{'descr': '<' 'f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("concatenated str and bytes", (1, 0), b"{'descr': '<' b'f4', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("hex dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (0x5,), }", true, true),
    ("octal dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (0o5,), }", true, true),
    ("binary dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (0b101,), }", true, true),
    ("underscore dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (0_5,), }", false, false),
    ("underscore dim ok", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (1_0,), }", true, true),
    ("float dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5.0,), }", false, false),
    ("bool dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (True,), }", true, true),
    ("python 2 long", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5L,), }", true, true),
    ("python 2 long v2", (2, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5L,), }", true, true),
    ("python 2 long v3", (3, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5L,), }", false, false),
    ("list shape", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': [5], }", false, false),
    ("empty shape", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (), }", true, true),
    ("fortran 0", (1, 0), b"{'descr': '<f4', 'fortran_order': 0, 'shape': (5,), }", false, false),
    ("fortran None", (1, 0), b"{'descr': '<f4', 'fortran_order': None, 'shape': (5,), }", false, false),
    ("fortran lowercase", (1, 0), b"{'descr': '<f4', 'fortran_order': false, 'shape': (5,), }", false, false),
    ("missing key", (1, 0), b"{'descr': '<f4', 'shape': (5,), }", false, false),
    ("extra key", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), 'x': 1}", false, false),
    ("duplicate key last wins", (1, 0), b"{'descr': '<f8', 'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("duplicate key bad last", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), 'shape': 5}", false, false),
    ("comment", (1, 0), b"{'descr': '<f4', # dtype\n 'fortran_order': False, 'shape': (5,), }", true, true),
    ("newlines inside", (1, 0), b"{'descr': '<f4',\n'fortran_order': False,\r\n'shape': (5,\n), }", true, true),
    ("line continuation", (1, 0), b"{'descr': '<f4', \\\n'fortran_order': False, 'shape': (5,), }", true, true),
    ("leading spaces", (1, 0), b"   {'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("leading newline", (1, 0), b"\n{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("tabs and form feed", (1, 0), b"{'descr':\t'<f4',\x0c'fortran_order': False, 'shape': (5,), }", true, true),
    ("vertical tab", (1, 0), b"{'descr':\x0b'<f4', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("null byte", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }\x00", false, false),
    ("null in string", (1, 0), b"{'descr': '<f4\x00', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("set not dict", (1, 0), b"{'descr', '<f4'}", false, false),
    ("tuple not dict", (1, 0), b"('descr', '<f4')", false, false),
    ("two dicts", (1, 0), b"{} {}", false, false),
    ("trailing text", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), } x", false, false),
    ("unclosed", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,),", false, false),
    ("call", (1, 0), b"{'descr': '<f4', 'fortran_order': bool(0), 'shape': (5,), }", false, false),
    ("name", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (n,), }", false, false),
    ("big dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", true, false), // np.load then fails: the array is too big
    ("2**62 dim", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }", true, false), // np.load then fails: 2^64 bytes of data
    ("huge empty", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 0), }", true, true),
    ("big descr f8", (1, 0), b"{'descr': '>f8', 'fortran_order': False, 'shape': (5,), }", true, false), // a dtype the crate does not support
    ("f8", (1, 0), b"{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("i4", (1, 0), b"{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("i8", (1, 0), b"{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("u4", (1, 0), b"{'descr': '<u4', 'fortran_order': False, 'shape': (5,), }", true, true),
    ("utf-8 in v3", (3, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), '\xc3\xa9': 1}", false, false),
    ("not utf-8 in v3", (3, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), '\xff': 1}", false, false),
    ("latin-1 in v1 string", (1, 0), b"{'descr': '<f4\xe9', 'fortran_order': False, 'shape': (5,), }", false, false),
    ("unbalanced", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,]}", false, false),
    ("nested too deep", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((5)))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))),), }", false, false),
    ("nested deep ok", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((5)))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))),), }", true, true),
    ("complex", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (1+2j,), }", false, false),
    ("exponent float", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5e0,), }", false, false),
    ("leading zero float", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (05.0,), }", false, false),
    ("trailing comma dict", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,),}", true, true),
    ("two commas", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'shape': (5,,), }", false, false),
    ("name escape", (1, 0), b"{'descr': '<f\\N{DIGIT FOUR}', 'fortran_order': False, 'shape': (5,), }", true, false), // \N{...} escapes: py_literal has no name table
    ("unknown escape", (1, 0), b"{'descr': '<f4', 'fortran_order': False, 'sha\\pe': (5,), }", false, false),
];

/// A `.npy` header as NumPy lays it out: magic, version, length, the dict
/// padded with spaces to a multiple of 64 bytes, a newline.
fn npy_header(version: (u8, u8), text: &[u8]) -> Vec<u8> {
    let len_bytes = if version.0 == 1 { 2 } else { 4 };
    let mut dict = text.to_vec();
    while !(8 + len_bytes + dict.len() + 1).is_multiple_of(64) {
        dict.push(b' ');
    }
    dict.push(b'\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([version.0, version.1]);
    if len_bytes == 2 {
        out.extend((dict.len() as u16).to_le_bytes());
    } else {
        out.extend((dict.len() as u32).to_le_bytes());
    }
    out.extend(dict);
    out
}

#[test]
fn header_verdicts_match_numpy() {
    let mut wrong = Vec::new();
    for &(name, version, text, _numpy, accept) in CASES {
        let bytes = npy_header(version, text);
        let got = parse_header(&bytes, Path::new("h.npy"));
        if got.is_ok() != accept {
            wrong.push(format!("{name}: expected accept={accept}, got {got:?}"));
        }
        if let Err(e) = got {
            let msg = e.to_string();
            assert!(
                msg.starts_with("h.npy: ") && msg.len() > 20,
                "{name}: {msg}"
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn parsed_values_are_numpys() {
    let parse = |text: &[u8]| parse_header(&npy_header((1, 0), text), Path::new("h.npy")).unwrap();
    let text = b"{'descr': u'<f8', 'fortran_order': (True), 'shape': ((2), 0x3), }";
    let h = parse(text);
    assert_eq!(
        (h.dtype, h.fortran_order, &h.shape[..]),
        (Dtype::F64, true, &[2, 3][..])
    );
    assert_eq!(h.data_offset, npy_header((1, 0), text).len() as u64);
    assert_eq!(h.data_bytes(), 48);
    let h = parse(b"{'descr': '<' 'i4', 'fortran_order': False, 'shape': (True, +7, 1_0), }");
    assert_eq!((h.dtype, h.shape), (Dtype::I32, vec![1, 7, 10]));
    let h = parse(b"{'shape': (5L,), 'descr': '\\x3cu4', 'fortran_order': False}");
    assert_eq!((h.dtype, h.shape), (Dtype::U32, vec![5]));
    let h = parse(b"{'''shape''': (5,), \"descr\": \"\"\"<f4\"\"\", 'fortran_order': False}");
    assert_eq!((h.dtype, h.shape), (Dtype::F32, vec![5]));
    // An empty array with a huge dimension: no data, nothing to hold.
    let h = parse(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 0), }");
    assert_eq!((h.len(), h.data_bytes(), h.is_empty()), (0, 0, true));
}
