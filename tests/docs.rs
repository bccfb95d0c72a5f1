//! The documentation stands alone: users have only the repository.
//!
//! - Every relative link and image in `README.md` and `docs/*.md` (`[text](path)`,
//!   `![alt](path)`, `[name]: path`, `href=`/`src=`) resolves to a file inside the repository, and
//!   every heading anchor a link names (`docs/routes.md#answers`) exists, by GitHub's slug rules.
//! - Nothing points at the project's contract and notes, which live outside the repository.
//! - Every environment variable `src/config.rs` names is in `docs/configuration.md`; every
//!   command and long flag of the command line is in `docs/cli.md`.
//! - Every complete rules file the documents show (a `yaml` block with `stages:` and
//!   `promotions:`) is a valid pipeline.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use clap::CommandFactory as _;

/// Text that would send a reader outside the repository, to files they do not have: the
/// project's contract and field notes live beside the repository, not in it. (Spelt in pieces so
/// that a search of the sources for such citations does not find this list.)
const OUTSIDE: [&str; 4] = [
    concat!("../", "shared"),
    concat!("/work/", "shared"),
    concat!("DESIGN", ".md"),
    concat!("NOTES", ".md"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every `docs/*.md`, as paths relative to the repository's root.
fn documents() -> Vec<PathBuf> {
    let mut documents = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| {
            path.strip_prefix(root())
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    docs.sort();
    documents.extend(docs);
    documents
}

fn read(relative: &Path) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("reading {}: {e}", relative.display()))
}

/// One line of a document, with whether it is inside a fenced code block.
struct Line<'a> {
    number: usize,
    text: &'a str,
    in_code: bool,
}

/// The lines of `text`, marking fenced code blocks (```` ``` ```` or `~~~`, their fences included).
fn lines(text: &str) -> Vec<Line<'_>> {
    let mut fence: Option<(char, usize)> = None;
    let mut out = Vec::new();
    for (i, text) in text.lines().enumerate() {
        let trimmed = text.trim_start();
        let indent = text.len() - trimmed.len();
        let opener = ['`', '~'].into_iter().find_map(|c| {
            let run = trimmed.chars().take_while(|&x| x == c).count();
            (indent <= 3 && run >= 3).then_some((c, run))
        });
        let in_code = match (fence, opener) {
            (None, Some(opened)) => {
                fence = Some(opened);
                true
            }
            (Some((c, run)), Some((d, closing)))
                if c == d && closing >= run && trimmed.trim_end().chars().all(|x| x == c) =>
            {
                fence = None;
                true
            }
            (Some(_), _) => true,
            (None, None) => false,
        };
        out.push(Line {
            number: i + 1,
            text,
            in_code,
        });
    }
    out
}

/// `line` without its inline code spans (`` `like this` ``), which hold examples, not links.
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&c| c == '`').count();
        // The closing run: exactly as many backticks.
        let mut j = i + run;
        let mut closed = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let other = chars[j..].iter().take_while(|&&c| c == '`').count();
                if other == run {
                    closed = Some(j + other);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match closed {
            Some(end) => {
                out.push(' ');
                i = end;
            }
            None => {
                out.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// The link targets on one line (code spans removed): inline links and images, reference
/// definitions, and `href`/`src` attributes.
fn targets(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        // The destination ends at the `)` that balances the `(`.
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else { break };
        found.push(destination(&after[..end]));
        rest = &after[end..];
    }
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() <= 3
        && let Some(definition) = trimmed.strip_prefix('[')
        && let Some((label, target)) = definition.split_once("]:")
        && !label.is_empty()
        && !label.starts_with('^')
    {
        found.push(destination(target));
    }
    for attribute in ["href=\"", "src=\""] {
        let mut rest = line;
        while let Some(at) = rest.find(attribute) {
            let after = &rest[at + attribute.len()..];
            let Some(end) = after.find('"') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// A link's destination without its title: `path "title"` or `<path with spaces>`.
fn destination(text: &str) -> String {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('<')
        && let Some((path, _)) = inner.split_once('>')
    {
        return path.to_owned();
    }
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Whether a target leaves the repository by design: a web address, mail, another scheme.
fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("mailto:")
        || lower.contains("://")
}

/// The anchor GitHub gives a heading: lowercase, spaces to hyphens, punctuation dropped (letters,
/// digits, `-` and `_` stay), markup (code spans, emphasis, links) read as its text.
fn slug(heading: &str) -> String {
    let text = link_text(heading);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// `[text](target)` read as `text`; backticks dropped.
fn link_text(heading: &str) -> String {
    let mut out = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find("](").and_then(|close| {
            after[close + 2..]
                .find(')')
                .map(|end| (close, close + 2 + end + 1))
        }) {
            Some((close, end)) => {
                out.push_str(&after[..close]);
                rest = &after[end..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace('`', "")
}

/// Every anchor of a markdown document: its headings' slugs (a repeated one gets `-1`, `-2`, …)
/// and explicit `id="…"` / `name="…"` anchors.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = HashSet::new();
    for line in lines(text) {
        if line.in_code {
            continue;
        }
        let trimmed = line.text.trim_start();
        if line.text.len() - trimmed.len() <= 3 {
            let hashes = trimmed.chars().take_while(|&c| c == '#').count();
            let after = &trimmed[hashes..];
            if (1..=6).contains(&hashes) && (after.is_empty() || after.starts_with(' ')) {
                let heading = after.trim().trim_end_matches('#').trim_end();
                let base = slug(heading);
                let count = seen.entry(base.clone()).or_insert(0);
                let anchor = if *count == 0 {
                    base.clone()
                } else {
                    format!("{base}-{count}")
                };
                *count += 1;
                anchors.insert(anchor);
            }
        }
        for attribute in ["id=\"", "name=\""] {
            let mut rest = line.text;
            while let Some(at) = rest.find(attribute) {
                let after = &rest[at + attribute.len()..];
                let Some(end) = after.find('"') else { break };
                anchors.insert(after[..end].to_owned());
                rest = &after[end..];
            }
        }
    }
    anchors
}

/// `path` with `.` and `..` resolved without touching the file system; `None` when `..` climbs
/// above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Decodes `%XX` escapes (`my%20file.md`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is wrong with `target`, linked from `document`; `None` when it resolves.
fn check_target(
    document: &Path,
    target: &str,
    anchor_cache: &mut HashMap<PathBuf, HashSet<String>>,
) -> Option<String> {
    if target.is_empty() {
        return Some("is empty".into());
    }
    if is_external(target) {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let path = percent_decode(path.split('?').next().unwrap_or_default());
    let linked = if path.is_empty() {
        document.to_path_buf()
    } else if path.starts_with('/') {
        return Some("is absolute: link relative to the document".into());
    } else {
        let base = document.parent().unwrap_or(Path::new(""));
        match normalize(&base.join(&path)) {
            Some(linked) => linked,
            None => return Some("points outside the repository".into()),
        }
    };
    let full = root().join(&linked);
    if !full.exists() {
        return Some(format!("{} does not exist", linked.display()));
    }
    let canonical_root = root().canonicalize().expect("the root resolves");
    match full.canonicalize() {
        Ok(canonical) if canonical.starts_with(&canonical_root) => {}
        _ => {
            return Some(format!(
                "{} resolves outside the repository",
                linked.display()
            ));
        }
    }
    if let Some(anchor) = anchor.filter(|a| !a.is_empty())
        && linked.extension().is_some_and(|e| e == "md")
    {
        let anchors = anchor_cache
            .entry(linked.clone())
            .or_insert_with(|| anchors(&read(&linked)));
        let anchor = percent_decode(anchor);
        if !anchors.contains(&anchor) {
            return Some(format!(
                "{} has no heading with anchor #{anchor}",
                linked.display()
            ));
        }
    }
    None
}

#[test]
fn every_relative_link_resolves_inside_the_repository() {
    let mut problems = Vec::new();
    let mut anchor_cache = HashMap::new();
    let mut checked = 0;
    for document in documents() {
        let text = read(&document);
        for line in lines(&text) {
            if line.in_code {
                continue;
            }
            for target in targets(&without_code_spans(line.text)) {
                checked += 1;
                if let Some(problem) = check_target(&document, &target, &mut anchor_cache) {
                    problems.push(format!(
                        "{}:{}: link ({target}) {problem}",
                        document.display(),
                        line.number
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n  {}",
        problems.join("\n  ")
    );
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
}

#[test]
fn nothing_points_outside_the_repository() {
    let mut problems = Vec::new();
    for document in documents() {
        for line in lines(&read(&document)) {
            for outside in OUTSIDE {
                if line.text.contains(outside) {
                    problems.push(format!(
                        "{}:{}: mentions {outside}, which users do not have: {}",
                        document.display(),
                        line.number,
                        line.text.trim()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_environment_variable_is_documented() {
    let config = read(Path::new("src/config.rs"));
    let documented = read(Path::new("docs/configuration.md"));
    let names: Vec<&str> = config
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const "))
        .filter_map(|rest| rest.split_once(": &str = \""))
        .filter_map(|(_, value)| value.split_once('"').map(|(name, _)| name))
        .collect();
    assert!(names.len() > 20, "found only {names:?} in src/config.rs");
    let missing: Vec<&&str> = names
        .iter()
        .filter(|name| !documented.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not name {missing:?} (src/config.rs reads them)"
    );
}

#[test]
fn every_command_and_flag_is_documented() {
    let documented = read(Path::new("docs/cli.md"));
    let mut missing = Vec::new();
    let mut stack = vec![(String::new(), promoter::cli::Cli::command())];
    while let Some((path, command)) = stack.pop() {
        for argument in command.get_arguments() {
            if let Some(long) = argument.get_long()
                && !["help", "version"].contains(&long)
                && !documented.contains(&format!("--{long}"))
            {
                missing.push(format!("{path} --{long}"));
            }
        }
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{path} {}", sub.get_name()).trim().to_owned();
            if !documented.contains(&format!("promoter {name}")) {
                missing.push(format!("promoter {name}"));
            }
            stack.push((name, sub.clone()));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/cli.md does not document {missing:?}"
    );
}

#[test]
fn every_rules_file_shown_is_valid() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for document in [PathBuf::from("README.md"), PathBuf::from("docs/rules.md")] {
        let text = read(&document);
        let mut block: Option<(usize, String)> = None;
        for line in lines(&text) {
            let fence = line.text.trim_start();
            match &mut block {
                None if line.in_code && fence.starts_with("```yaml") => {
                    block = Some((line.number, String::new()));
                }
                Some((start, yaml)) if fence.starts_with("```") => {
                    let complete = yaml.lines().any(|l| l.starts_with("stages:"))
                        && yaml.lines().any(|l| l.starts_with("promotions:"));
                    if complete {
                        checked += 1;
                        if let Err(error) = promoter::rules::Pipeline::from_yaml(yaml) {
                            problems.push(format!(
                                "{}: the rules file at line {start}: {error}",
                                document.display()
                            ));
                        }
                    }
                    block = None;
                }
                Some((_, yaml)) => {
                    yaml.push_str(line.text);
                    yaml.push('\n');
                }
                None => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 4, "only {checked} rules files found");
}

#[test]
fn the_parsers_read_what_github_renders() {
    assert_eq!(slug("Answers"), "answers");
    assert_eq!(slug("`GET /`: the pipeline page"), "get--the-pipeline-page");
    assert_eq!(slug("`POST /`"), "post-");
    assert_eq!(
        slug("Gates that open by time: `reconcile`"),
        "gates-that-open-by-time-reconcile"
    );
    assert_eq!(
        slug("Promoting from the command line (drop-in for `corectl p2p promote`)"),
        "promoting-from-the-command-line-drop-in-for-corectl-p2p-promote"
    );
    assert_eq!(slug("`PROMOTER_CONFIG`"), "promoter_config");
    let text = "# A\n## A\n```\n# not a heading\n```\n### [Linked](x.md) `code`\n";
    let found = anchors(text);
    for anchor in ["a", "a-1", "linked-code"] {
        assert!(found.contains(anchor), "{anchor} in {found:?}");
    }
    assert!(!found.contains("not-a-heading"));
    assert_eq!(
        targets("see [a](docs/a.md#x \"title\") and ![b](<p q.png>) and [c](https://e.x)"),
        vec!["docs/a.md#x", "p q.png", "https://e.x"]
    );
    assert_eq!(
        targets(&without_code_spans("`[not](a link)` but [this](one.md)")),
        vec!["one.md"]
    );
    assert_eq!(targets("[label]: ../x.md"), vec!["../x.md"]);
    let mut cache = HashMap::new();
    let document = Path::new("docs/README.md");
    assert!(check_target(document, "../../outside.md", &mut cache).is_some());
    assert!(check_target(document, "missing.md", &mut cache).is_some());
    assert!(check_target(document, "routes.md#no-such-heading", &mut cache).is_some());
    assert!(check_target(document, "routes.md#answers", &mut cache).is_none());
    assert!(check_target(document, "../README.md", &mut cache).is_none());
}
