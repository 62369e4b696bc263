//! Which DKIM keys sign a message: the campaign's fixed keys, and from its key set the
//! key for the message's From domain; and the DMARC alignment guard (a `d=` that is not
//! aligned with the From domain earns no DMARC pass, so it is refused unless the
//! campaign says it is an extra signature beside an aligned one).

use std::collections::HashMap;

use super::address::ascii_domain;
use super::alignment::{aligned, organizational_domain};
use super::dkim::DkimSigner;
use crate::error::{CompileError, RenderError};
use crate::wire::DkimKeySpec;

/// A key of the campaign, in the order the signatures are written.
enum Entry {
    /// Signs every message; `aligned` says whether its d= must align with From;
    /// `index` is its place in the campaign's list, for errors.
    Fixed {
        signer: DkimSigner,
        aligned: bool,
        index: usize,
    },
    /// The key set: keys by the From domain they are for; one signs each message.
    Set(HashMap<String, DkimSigner>),
}

pub struct DkimKeys {
    entries: Vec<Entry>,
    /// The From domain when every message has the same one (checked once, here).
    fixed_from: Option<String>,
}

impl DkimKeys {
    /// Loads and checks the keys; `from_domain` is the campaign's From domain when it
    /// does not vary per recipient.
    pub fn new(specs: &[DkimKeySpec], from_domain: Option<&str>) -> Result<Self, CompileError> {
        let mut entries: Vec<Entry> = Vec::with_capacity(specs.len());
        let mut set_at = None;
        for (i, spec) in specs.iter().enumerate() {
            let signer = DkimSigner::new(spec, i)?;
            let who = || format!("dkim[{i}] ({}/{})", spec.domain, spec.selector);
            let Some(for_domain) = &spec.for_domain else {
                entries.push(Entry::Fixed {
                    signer,
                    aligned: spec.aligned,
                    index: i,
                });
                continue;
            };
            let for_domain = ascii_domain(for_domain)
                .map_err(|e| CompileError::config(who(), format!("key set domain: {e}")))?
                .into_owned();
            if !spec.aligned {
                return Err(CompileError::config(
                    who(),
                    "a key of a key set signs for its From domain: it cannot be aligned=False",
                ));
            }
            if !aligned(signer.domain(), &for_domain) {
                return Err(CompileError::config(
                    who(),
                    format!(
                        "d={} is not aligned with {for_domain}, the From domain it is given \
                         for (DMARC relaxed alignment: the same organisational domain)",
                        signer.domain()
                    ),
                ));
            }
            let at = *set_at.get_or_insert_with(|| {
                entries.push(Entry::Set(HashMap::new()));
                entries.len() - 1
            });
            let Entry::Set(set) = &mut entries[at] else {
                unreachable!("set_at points at the key set")
            };
            if set.contains_key(&for_domain) {
                return Err(CompileError::config(
                    who(),
                    format!("the key set has two keys for {for_domain}"),
                ));
            }
            set.insert(for_domain, signer);
        }
        let has_aligned = entries.iter().any(|e| match e {
            Entry::Fixed { aligned, .. } => *aligned,
            Entry::Set(_) => true,
        });
        if let Some(i) = specs.iter().position(|s| !s.aligned) {
            if !has_aligned {
                return Err(CompileError::config(
                    format!("dkim[{i}] ({}/{})", specs[i].domain, specs[i].selector),
                    "an unaligned key (aligned=False) signs only beside an aligned one: \
                     add a key whose domain is the From domain's",
                ));
            }
        }
        let keys = DkimKeys {
            entries,
            fixed_from: from_domain.map(str::to_string),
        };
        if let Some(from) = from_domain {
            keys.check(from).map_err(|(i, message)| {
                let field = i.map_or("dkim".to_string(), |i| {
                    format!("dkim[{i}] ({}/{})", specs[i].domain, specs[i].selector)
                });
                CompileError::config(field, message)
            })?;
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many signatures a message gets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The keys that sign a message whose From domain is `from` (ASCII, lower case), in
    /// order; a recipient whose From domain no key can sign for fails alone.
    pub fn for_message(&self, from: &str) -> Result<Vec<&DkimSigner>, RenderError> {
        if self.fixed_from.as_deref() != Some(from) {
            self.check(from)
                .map_err(|(_, message)| RenderError::Header {
                    header: "From".to_string(),
                    message,
                })?;
        }
        Ok(self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Fixed { signer, .. } => signer,
                Entry::Set(set) => pick(set, from).expect("checked: the set has a key"),
            })
            .collect())
    }

    /// Every aligned key aligns with `from` and the key set has a key for it; else the
    /// index of the first key at fault (None: the key set) and why.
    fn check(&self, from: &str) -> Result<(), (Option<usize>, String)> {
        for entry in &self.entries {
            match entry {
                Entry::Fixed {
                    signer,
                    aligned: true,
                    index,
                } if !aligned(signer.domain(), from) => {
                    return Err((
                        Some(*index),
                        format!(
                            "d={} is not aligned with the From domain {from} (DMARC relaxed \
                             alignment: the same organisational domain, {} vs {}), so \
                             receivers give it no DMARC pass; sign with a key of {}, or mark \
                             this key aligned=False if it is an extra signature beside an \
                             aligned one{}",
                            signer.domain(),
                            organizational_domain(signer.domain()),
                            organizational_domain(from),
                            organizational_domain(from),
                            if self.fixed_from.is_none() {
                                " (a From that varies per recipient needs a key set, DkimKeys)"
                            } else {
                                ""
                            }
                        ),
                    ))
                }
                Entry::Set(set) if pick(set, from).is_none() => {
                    return Err((
                        None,
                        format!(
                            "the DKIM key set (DkimKeys) has no key for the From domain {from} \
                             or a domain above it up to {}",
                            organizational_domain(from)
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The key for `from`: the one given for `from` itself, else for the nearest domain
/// above it, up to its organisational domain (a key for example.com signs
/// news.example.com; one for news.example.com does not sign example.com).
fn pick<'a>(set: &'a HashMap<String, DkimSigner>, from: &str) -> Option<&'a DkimSigner> {
    let org = organizational_domain(from);
    let mut domain = from;
    loop {
        if let Some(signer) = set.get(domain) {
            return Some(signer);
        }
        if domain.len() <= org.len() {
            return None;
        }
        domain = domain.split_once('.').map_or(org, |(_, parent)| parent);
    }
}
