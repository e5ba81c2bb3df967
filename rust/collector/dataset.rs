//! The optional CSV dataset: `<prefix>performance_samples.csv` and
//! `<prefix>application_logs.csv`, as the EDGELESS orchestrator writes them.
//!
//! `append=false` truncates and writes the header; `append=true` appends and
//! writes the header only to an empty (or new) file. The user's
//! `additional_header` / `additional_fields` (already comma-separated
//! columns, written as given) come first; when empty, no column is added
//! (upstream leaves an empty first column instead).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

pub const SAMPLES_FILE: &str = "performance_samples.csv";
pub const LOGS_FILE: &str = "application_logs.csv";
pub const SAMPLES_HEADER: &str = "identifier,metric,timestamp,value";
pub const LOGS_HEADER: &str = "identifier,target,timestamp,value";

pub struct Dataset {
    pub samples: File,
    pub logs: File,
    /// `additional_fields` plus its separating comma, or empty.
    pub row_prefix: String,
}

impl Dataset {
    pub fn open(
        prefix: &str,
        append: bool,
        additional_header: &str,
        additional_fields: &str,
    ) -> io::Result<Self> {
        let samples_path = format!("{prefix}{SAMPLES_FILE}");
        if let Some(dir) = Path::new(&samples_path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let lead = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{s},")
            }
        };
        let header_lead = lead(additional_header);
        Ok(Self {
            samples: open_file(
                &samples_path,
                append,
                &format!("{header_lead}{SAMPLES_HEADER}"),
            )?,
            logs: open_file(
                &format!("{prefix}{LOGS_FILE}"),
                append,
                &format!("{header_lead}{LOGS_HEADER}"),
            )?,
            row_prefix: lead(additional_fields),
        })
    }
}

fn open_file(path: &str, append: bool, header: &str) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    if !append || file.metadata()?.len() == 0 {
        writeln!(file, "{header}")?;
    }
    Ok(file)
}
