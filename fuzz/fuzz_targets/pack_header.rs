//! Pack header plaintext, trailer and whole-pack header reading.
//!
//! Input: `data_len u64 LE || header plaintext`. The plaintext is decoded
//! against the given data length and against the length its own entries
//! imply; it is also sealed like a real pack (fixed key) and read back
//! through `read_pack_header`, so the decoding after authentication is
//! reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::crypto::{self, MasterKey};
use strata::id::Id;
use strata::repo::pack::{
    ENTRY_LEN, HEADER_PREFIX_LEN, TRAILER_LEN, decode_header, encode_header, header_range,
    read_pack_header,
};

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_secret([7; 32]);
    // Raw bytes as a whole pack, and their last 8 bytes as a trailer.
    assert!(read_pack_header(&key, &Id([1; 32]), data).is_err());
    if data.len() >= TRAILER_LEN {
        if let Ok(r) = header_range(data.len() as u64, &data[data.len() - TRAILER_LEN..]) {
            assert!(r.start <= r.end && r.end == (data.len() - TRAILER_LEN) as u64);
        }
    }
    if data.len() < 8 {
        return;
    }
    let given = u64::from_le_bytes(data[..8].try_into().unwrap());
    let plain = &data[8..];
    let implied: u64 = plain
        .get(HEADER_PREFIX_LEN..)
        .unwrap_or(&[])
        .chunks_exact(ENTRY_LEN)
        .map(|e| u64::from(u32::from_le_bytes(e[2..6].try_into().unwrap())))
        .sum();
    let direct = decode_header(plain, implied);
    let decoded = [
        decode_header(plain, given).ok(),
        direct.as_ref().ok().cloned(),
    ];
    for entries in decoded.into_iter().flatten() {
        let salt: [u8; 16] = plain[1..17].try_into().unwrap();
        assert_eq!(
            encode_header(&salt, &entries),
            plain,
            "pack header is not canonical"
        );
        let mut off = 0u64;
        for e in &entries {
            assert_eq!(u64::from(e.offset), off);
            off += u64::from(e.stored_len);
        }
    }
    // Seal the plaintext as a real pack header would be and read it back.
    if implied <= 1 << 20 {
        let id = key.id_of(plain);
        let mut ad = b"strata:pack-header:".to_vec();
        ad.extend_from_slice(&id.0);
        let sealed = crypto::seal(key.encryption_key(), &ad, plain);
        let mut pack = vec![0u8; implied as usize];
        pack.extend_from_slice(&sealed);
        pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        pack.extend_from_slice(b"STPK");
        let read = read_pack_header(&key, &id, &pack);
        match (&read, &direct) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => panic!("read_pack_header and decode_header disagree"),
        }
    }
});
