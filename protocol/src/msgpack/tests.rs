use super::*;

fn round(json: &str) -> String {
    to_json(&from_json(json).unwrap()).unwrap()
}

#[test]
fn json_round_trips_keep_values_and_key_order() {
    for j in [
        r#"{"op":"pub","topic":"a/b","data":{"z":1,"a":[1,-1,-33,200,-200,70000,-70000,5000000000,-5000000000,18446744073709551615,1.5,-0.25],"s":"é\"\n","n":null,"t":true,"f":false}}"#,
        r#"[]"#,
        r#"{}"#,
        r#""x""#,
        r#"-9223372036854775808"#,
    ] {
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        let back = round(j);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&back).unwrap(),
            v,
            "{j}"
        );
    }
    assert_eq!(round(r#"{"z":1,"a":2}"#), r#"{"z":1,"a":2}"#);
}

#[test]
fn smallest_encodings() {
    assert_eq!(from_json("0").unwrap(), [0x00]);
    assert_eq!(from_json("127").unwrap(), [0x7f]);
    assert_eq!(from_json("128").unwrap(), [0xcc, 0x80]);
    assert_eq!(from_json("-32").unwrap(), [0xe0]);
    assert_eq!(from_json("-33").unwrap(), [0xd0, 0xdf]);
    assert_eq!(from_json("65536").unwrap(), [0xce, 0, 1, 0, 0]);
    assert_eq!(from_json(r#""ab""#).unwrap(), [0xa2, b'a', b'b']);
    assert_eq!(from_json("null").unwrap(), [0xc0]);
    assert_eq!(from_json("[true]").unwrap(), [0x91, 0xc3]);
}

#[test]
fn long_arrays_and_maps_get_wider_headers() {
    for n in [15usize, 16, 65535, 65536] {
        let arr = format!("[{}]", vec!["1"; n].join(","));
        let mp = from_json(&arr).unwrap();
        match n {
            15 => assert_eq!(mp[0], 0x9f),
            16 | 65535 => assert_eq!(mp[0], 0xdc),
            _ => assert_eq!(mp[0], 0xdd),
        }
        assert_eq!(round(&arr), arr);
        let obj = format!(
            "{{{}}}",
            (0..n)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mp = from_json(&obj).unwrap();
        assert_eq!(
            mp[0],
            match n {
                15 => 0x8f,
                16 | 65535 => 0xde,
                _ => 0xdf,
            }
        );
        assert_eq!(round(&obj), obj);
    }
}

#[test]
fn base64_objects_are_bin_and_back() {
    let mp = from_json(r#"{"data":{"$base64":"AAEC/w=="}}"#).unwrap();
    assert_eq!(
        mp,
        [0x81, 0xa4, b'd', b'a', b't', b'a', 0xc4, 4, 0, 1, 2, 0xff]
    );
    assert_eq!(to_json(&mp).unwrap(), r#"{"data":{"$base64":"AAEC/w=="}}"#);
    // Not binary: another key, not a string, not base64. Kept as maps.
    for j in [
        r#"{"$base64":"AA==","x":1}"#,
        r#"{"x":1,"$base64":"AA=="}"#,
        r#"{"$base64":5}"#,
        r#"{"$base64":"not base64!"}"#,
        r#"{"$base64":{"$base64":"AA=="},"y":[{"$base64":"AA=="}]}"#,
    ] {
        let mp = from_json(j).unwrap();
        assert_eq!(mp[0] & 0xf0, 0x80, "{j}");
        let v: serde_json::Value = serde_json::from_str(&to_json(&mp).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::from_str::<serde_json::Value>(j).unwrap(),
            "{j}"
        );
    }
    // Large binary: bin16 and bin32.
    for n in [300usize, 70000] {
        let mut mp = Vec::new();
        write::bin(&mut mp, &vec![7u8; n]);
        let j = to_json(&mp).unwrap();
        assert_eq!(from_json(&j).unwrap(), mp);
    }
}

#[test]
fn floats() {
    let mut mp = vec![0xca];
    mp.extend_from_slice(&1.5f32.to_be_bytes());
    assert_eq!(to_json(&mp).unwrap(), "1.5");
    assert_eq!(from_json("2.5").unwrap()[0], 0xcb);
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut mp = Vec::new();
        write::f64(&mut mp, x);
        assert_eq!(to_json(&mp), Err(MsgpackError::NotFinite));
    }
}

#[test]
fn malformed_input_is_refused() {
    use MsgpackError::*;
    let cases: &[(&[u8], MsgpackError)] = &[
        (&[], Truncated),
        (&[0x92, 0x01], Truncated),
        (&[0xa3, b'a'], Truncated),
        (&[0xdb, 0xff, 0xff, 0xff, 0xff], Truncated),
        (&[0xdd, 0xff, 0xff, 0xff, 0xff], Truncated),
        (&[0x01, 0x02], Trailing(1)),
        (&[0xc1], BadByte(0xc1)),
        (&[0xd4, 0x01, 0x00], Ext),
        (&[0xc7, 0x01, 0x01, 0x00], Ext),
        (&[0x81, 0x01, 0x01], KeyNotString),
        (&[0xa1, 0xff], Utf8),
    ];
    for (bytes, want) in cases {
        assert_eq!(&to_json(bytes).unwrap_err(), want, "{bytes:02x?}");
    }
    let deep = [vec![0x91u8; MAX_DEPTH + 1], vec![0xc0]].concat();
    assert_eq!(to_json(&deep), Err(TooDeep));
    let ok = [vec![0x91u8; MAX_DEPTH], vec![0xc0]].concat();
    assert!(to_json(&ok).is_ok());
    assert!(matches!(from_json("{"), Err(Json(_))));
    assert!(matches!(from_json("1 2"), Err(Json(_))));
}
