//! Projection queries: `{"x": [[…], …], "k"?, "whiten"?, "reconstruct"?, "alpha"?,
//! "contributions"?}` as JSON, or the rows as a `.npy` array with the options in the
//! query string (`?k=3&whiten=true`). The rows become a checked [`Batch`] of shape
//! `Shape::inputs(dim)`.

use super::json::{JsonObject, Key, Scalar};
use super::spill::{check_part, Spill};
use super::{BatchParser, Format, FormatError, RowLimit};
use crate::pca::check_counts;
use crate::pca::{Batch, BatchData, Part, Shape};

/// The options of a projection query.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProjectOptions {
    /// Components to project on (default: all reported).
    pub k: Option<usize>,
    /// Divide each score by the square root of its eigenvalue.
    pub whiten: bool,
    /// Return the reconstructions too.
    pub reconstruct: bool,
    /// Significance level for the monitoring statistics (with the monitoring work).
    pub alpha: Option<f64>,
    /// Return per-variable contributions (with the monitoring work).
    pub contributions: bool,
}

const OPTIONS: [&str; 5] = ["k", "whiten", "reconstruct", "alpha", "contributions"];

const PROJECT_KEYS: &[(&str, Key)] = &[
    ("x", Key::X),
    ("k", Key::Opt(0)),
    ("whiten", Key::Opt(1)),
    ("reconstruct", Key::Opt(2)),
    ("alpha", Key::Opt(3)),
    ("contributions", Key::Opt(4)),
];

/// A parsed projection query: the rows and the options.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectQuery {
    /// The rows, rows×dim.
    pub x: Batch,
    /// The options.
    pub options: ProjectOptions,
}

#[derive(Debug)]
enum Inner {
    Json(Box<Spill<JsonObject>>),
    Npy(Box<BatchParser>, ProjectOptions),
}

/// The push parser for `POST /v1/models/{name}/project` bodies.
#[derive(Debug)]
pub struct ProjectParser {
    inner: Inner,
    dim: usize,
}

impl ProjectParser {
    /// A JSON body's parser for rows of `dim` values, at most `limit.max` rows.
    pub fn json(dim: usize, limit: RowLimit) -> Self {
        Self {
            inner: Inner::Json(Box::new(Spill::new(JsonObject::new(
                Shape::inputs(dim),
                limit,
                PROJECT_KEYS,
                OPTIONS.len(),
            )))),
            dim,
        }
    }

    /// A `.npy` body's parser; the options come from the query string.
    pub fn npy(dim: usize, limit: RowLimit, options: ProjectOptions) -> Self {
        Self {
            inner: Inner::Npy(
                Box::new(BatchParser::new(Format::Npy, Shape::inputs(dim), limit)),
                options,
            ),
            dim,
        }
    }

    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// As the batch parsers.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        match &mut self.inner {
            Inner::Json(o) => o.feed(chunk),
            Inner::Npy(p, _) => p.feed(chunk),
        }
    }

    /// Tests: the memory budget's state, and forcing its path (see
    /// [`Spill::force`]); `None` for `.npy` bodies.
    #[cfg(test)]
    pub(crate) fn spill(&mut self) -> Option<&mut Spill<JsonObject>> {
        match &mut self.inner {
            Inner::Json(o) => Some(o),
            Inner::Npy(..) => None,
        }
    }

    /// Ends the body: the checked rows and the options.
    ///
    /// # Errors
    /// A truncated body, an option of the wrong type ([`FormatError::Malformed`]), or
    /// any check of [`Batch::new`].
    pub fn finish(self) -> Result<ProjectQuery, FormatError> {
        match self.inner {
            Inner::Npy(p, options) => Ok(ProjectQuery {
                x: p.finish()?,
                options,
            }),
            Inner::Json(o) => {
                let dim = self.dim;
                let o = o.finish(|mut live, saved| {
                    live.end()?;
                    options_from_json(&live.opts)?;
                    check_counts(Shape::inputs(dim), live.x.values.len(), None)?;
                    check_part(Part::X, dim, &mut saved.x.values, &mut live.x.values)?;
                    Ok(())
                })?;
                o.end()?;
                let options = options_from_json(&o.opts)?;
                let x = o.x.into_values();
                let x = Batch::new(Shape::inputs(self.dim), BatchData::F64 { x, y: None })?;
                Ok(ProjectQuery { x, options })
            }
        }
    }
}

fn type_error(name: &str, what: &str) -> FormatError {
    FormatError::Malformed(format!("`{name}` must be {what}"))
}

fn options_from_json(opts: &[Option<Scalar>]) -> Result<ProjectOptions, FormatError> {
    let get = |i: usize| opts.get(i).cloned().flatten();
    let bool_opt = |i: usize| -> Result<bool, FormatError> {
        match get(i) {
            None => Ok(false),
            Some(Scalar::Bool(b)) => Ok(b),
            Some(_) => Err(type_error(OPTIONS[i], "true or false")),
        }
    };
    let k = match get(0) {
        None | Some(Scalar::Null) => None,
        Some(Scalar::Number { int: Some(k), .. }) => {
            Some(usize::try_from(k).map_err(|_| type_error("k", "a non-negative integer"))?)
        }
        Some(_) => return Err(type_error("k", "a non-negative integer")),
    };
    let alpha = match get(3) {
        None | Some(Scalar::Null) => None,
        Some(Scalar::Number { value, .. }) => Some(value),
        Some(_) => return Err(type_error("alpha", "a number")),
    };
    Ok(ProjectOptions {
        k,
        whiten: bool_opt(1)?,
        reconstruct: bool_opt(2)?,
        alpha,
        contributions: bool_opt(4)?,
    })
}

impl ProjectOptions {
    /// The options from a query string (`k=3&whiten=true&reconstruct=false&alpha=0.01&
    /// contributions=true`), for `.npy` bodies. Unknown keys are refused.
    ///
    /// # Errors
    /// [`FormatError::InvalidParameter`] naming the key.
    pub fn from_query(query: &str) -> Result<Self, FormatError> {
        let mut o = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let invalid = |name: &'static str, what: &str| FormatError::InvalidParameter {
                name,
                reason: format!("{what}, got `{value}`"),
            };
            let flag = |name: &'static str| match value {
                "true" | "1" | "" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(invalid(name, "must be true or false")),
            };
            match key {
                "k" => {
                    o.k = Some(
                        value
                            .parse()
                            .map_err(|_| invalid("k", "must be a non-negative integer"))?,
                    );
                }
                "whiten" => o.whiten = flag("whiten")?,
                "reconstruct" => o.reconstruct = flag("reconstruct")?,
                "contributions" => o.contributions = flag("contributions")?,
                "alpha" => {
                    o.alpha = Some(
                        value
                            .parse()
                            .map_err(|_| invalid("alpha", "must be a number"))?,
                    );
                }
                _ => {
                    return Err(FormatError::InvalidParameter {
                        name: "query",
                        reason: format!(
                            "unknown key `{}`, expected one of {}",
                            key.chars().take(40).collect::<String>(),
                            OPTIONS.join(", ")
                        ),
                    })
                }
            }
        }
        Ok(o)
    }
}
