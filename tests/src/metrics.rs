//! Reading MCA's `/metrics` the way Prometheus would: every line is a comment or a sample,
//! and samples are looked up by name and labels.

use std::collections::BTreeMap;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A scrape's samples.
#[derive(Debug, Clone)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// Parses the text format; fails on any line that is neither a comment nor a sample.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            samples.push(sample(line).ok_or_else(|| anyhow::anyhow!("not a sample: {line:?}"))?);
        }
        Ok(Self(samples))
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples [`Self::find`] finds; 0 when none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|s| s.value).sum()
    }
}

fn sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        value => value.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    if !valid_name {
        return None;
    }
    let mut parsed = BTreeMap::new();
    let mut rest = labels;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let end = after.find('"')?;
        parsed.insert(key.to_owned(), after[..end].to_owned());
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(Sample {
        name: name.to_owned(),
        labels: parsed,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_refuses_anything_else() {
        let scrape = Scrape::parse(
            "# HELP x y\n# TYPE x counter\nx{a=\"1\",b=\"\"} 3\ny 2.5\nz_bucket{le=\"+Inf\"} 4\n",
        )
        .unwrap();
        assert_eq!(scrape.sum("x", &[("a", "1"), ("b", "")]), 3.0);
        assert_eq!(scrape.sum("y", &[]), 2.5);
        assert_eq!(scrape.sum("z_bucket", &[("le", "+Inf")]), 4.0);
        assert!(Scrape::parse("x{a=\"1\" 3\n").is_err());
        assert!(Scrape::parse("not a sample\n").is_err());
    }
}
