//! Just enough ELF to copy a dynamically linked program into the
//! initramfs: its interpreter, `DT_NEEDED` libraries and `DT_RUNPATH`.

/// What the dynamic loader needs to run an ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicInfo {
    /// `PT_INTERP`: the dynamic loader, such as `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or `DT_RPATH`) directories.
    pub runpath: Vec<String>,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(off..off + 8)?.try_into().ok()?))
}
fn usize_of(v: u64) -> Option<usize> {
    usize::try_from(v).ok()
}
fn cstr_at(d: &[u8], off: usize) -> Option<String> {
    let rest = d.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Reads the dynamic-linking information of a 64-bit little-endian ELF
/// file. `Ok(None)` for data that is not ELF; an error for a truncated or
/// inconsistent ELF file or one of another class.
pub fn dynamic_info(data: &[u8]) -> Result<Option<DynamicInfo>, String> {
    if data.get(..4) != Some(b"\x7fELF") {
        return Ok(None);
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let bad = || "truncated ELF header or program headers".to_string();
    let phoff = u64_at(data, 0x20).and_then(usize_of).ok_or_else(bad)?;
    let phentsize = usize::from(u16_at(data, 0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(data, 0x38).ok_or_else(bad)?);
    let mut phdrs = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let base = phoff + i * phentsize;
        phdrs.push(Phdr {
            kind: u32_at(data, base).ok_or_else(bad)?,
            offset: u64_at(data, base + 8).ok_or_else(bad)?,
            vaddr: u64_at(data, base + 16).ok_or_else(bad)?,
            filesz: u64_at(data, base + 32).ok_or_else(bad)?,
        });
    }
    let mut info = DynamicInfo::default();
    if let Some(p) = phdrs.iter().find(|p| p.kind == PT_INTERP) {
        let off = usize_of(p.offset).ok_or_else(bad)?;
        info.interpreter = Some(cstr_at(data, off).ok_or("bad PT_INTERP")?);
    }
    let Some(dynamic) = phdrs.iter().find(|p| p.kind == PT_DYNAMIC) else {
        return Ok(Some(info));
    };
    let mut entries = Vec::new();
    let start = usize_of(dynamic.offset).ok_or_else(bad)?;
    let count = usize_of(dynamic.filesz / 16).ok_or_else(bad)?;
    for i in 0..count {
        let tag = u64_at(data, start + i * 16).ok_or("truncated PT_DYNAMIC")?;
        let val = u64_at(data, start + i * 16 + 8).ok_or("truncated PT_DYNAMIC")?;
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, val));
    }
    let strtab_vaddr = entries
        .iter()
        .find(|(t, _)| *t == DT_STRTAB)
        .map(|(_, v)| *v)
        .ok_or("PT_DYNAMIC without DT_STRTAB")?;
    let strtab = phdrs
        .iter()
        .filter(|p| p.kind == PT_LOAD)
        .find(|p| p.vaddr <= strtab_vaddr && strtab_vaddr < p.vaddr + p.filesz)
        .map(|p| strtab_vaddr - p.vaddr + p.offset)
        .and_then(usize_of)
        .ok_or("DT_STRTAB outside every PT_LOAD segment")?;
    let string = |v: u64| -> Result<String, String> {
        usize_of(v)
            .and_then(|v| cstr_at(data, strtab + v))
            .ok_or_else(|| "string outside the string table".to_string())
    };
    let mut rpath = Vec::new();
    for (tag, val) in entries {
        match tag {
            DT_NEEDED => info.needed.push(string(val)?),
            DT_RUNPATH => info.runpath = split_path(&string(val)?),
            DT_RPATH => rpath = split_path(&string(val)?),
            _ => {}
        }
    }
    if info.runpath.is_empty() {
        info.runpath = rpath;
    }
    Ok(Some(info))
}

fn split_path(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 image: one PT_LOAD covering the file, a PT_INTERP
    /// and a PT_DYNAMIC with two DT_NEEDED and a DT_RUNPATH.
    fn sample() -> Vec<u8> {
        let mut d = vec![0u8; 0x400];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        d[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        d[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        let ph = |d: &mut Vec<u8>, i: usize, kind: u32, off: u64, vaddr: u64, size: u64| {
            let b = 0x40 + i * 56;
            d[b..b + 4].copy_from_slice(&kind.to_le_bytes());
            d[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
            d[b + 16..b + 24].copy_from_slice(&vaddr.to_le_bytes());
            d[b + 32..b + 40].copy_from_slice(&size.to_le_bytes());
        };
        ph(&mut d, 0, PT_LOAD, 0, 0x1000, 0x400);
        ph(&mut d, 1, PT_INTERP, 0x300, 0x1300, 28);
        ph(&mut d, 2, PT_DYNAMIC, 0x200, 0x1200, 5 * 16);
        d[0x300..0x31b].copy_from_slice(b"/lib64/ld-linux-x86-64.so.2");
        // String table at file 0x380 (vaddr 0x1380).
        let strs = b"\0libc.so.6\0libfoo.so.1\0/opt/lib:/usr/lib/x\0";
        d[0x380..0x380 + strs.len()].copy_from_slice(strs);
        let dynent = |d: &mut Vec<u8>, i: usize, tag: u64, val: u64| {
            let b = 0x200 + i * 16;
            d[b..b + 8].copy_from_slice(&tag.to_le_bytes());
            d[b + 8..b + 16].copy_from_slice(&val.to_le_bytes());
        };
        dynent(&mut d, 0, DT_STRTAB, 0x1380);
        dynent(&mut d, 1, DT_NEEDED, 1);
        dynent(&mut d, 2, DT_NEEDED, 11);
        dynent(&mut d, 3, DT_RUNPATH, 23);
        dynent(&mut d, 4, DT_NULL, 0);
        d
    }

    #[test]
    fn reads_interpreter_needed_and_runpath() {
        let info = dynamic_info(&sample()).unwrap().unwrap();
        assert_eq!(
            info.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(info.needed, ["libc.so.6", "libfoo.so.1"]);
        assert_eq!(info.runpath, ["/opt/lib", "/usr/lib/x"]);
    }

    #[test]
    fn non_elf_and_broken_elf() {
        assert_eq!(dynamic_info(b"#!/bin/sh\n").unwrap(), None);
        let mut d = sample();
        d.truncate(0x100);
        assert!(dynamic_info(&d).is_err());
        let mut d = sample();
        d[4] = 1;
        assert!(dynamic_info(&d).is_err());
    }
}
