//! Evaluation numbers for a trained classifier, computed exactly as scikit-learn computes them:
//! the confusion matrix (`sklearn.metrics.confusion_matrix`), per-class precision / recall / F1
//! with their macro and weighted averages, and the text of `classification_report`.
//!
//! It is **not** a metrics library: there are no sample weights, no multilabel targets and no
//! `zero_division` option. Every 0/0 gives 0.0, which is what sklearn's default
//! `zero_division="warn"` returns (it also prints a warning; we don't).
//!
//! Reference: scikit-learn 1.x, `sklearn/metrics/_classification.py` (`confusion_matrix`,
//! `precision_recall_fscore_support`, `classification_report`).
//!
//! ## Definitions, per class `c` of the matrix `M` (rows = true class, columns = predicted)
//! - `TP = M[c][c]`, `FP = column sum − TP`, `FN = row sum − TP`, support = row sum.
//! - precision = TP / (TP + FP), recall = TP / (TP + FN),
//!   F1 = 2·TP / (2·TP + FP + FN) — the same number as 2PR / (P + R), written the way sklearn
//!   computes it (from counts, so F1 is 0 rather than 0/0 when P or R is undefined).
//! - macro avg = unweighted mean over classes; weighted avg = mean weighted by support.

use crate::error::{Error, Result};

/// Confusion matrix, rows = true class, columns = predicted class (sklearn's `confusion_matrix`
/// with `labels = 0..classes`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConfusionMatrix {
    pub classes: usize,
    /// Row-major `classes × classes`: `counts[true_class * classes + predicted]`.
    pub counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// Counts each (label, prediction) pair.
    ///
    /// Errors: `classes` is 0; `labels` and `predictions` differ in length; a label or a
    /// prediction is `>= classes` (the message gives its position and value).
    pub fn new(classes: usize, labels: &[u8], predictions: &[u32]) -> Result<Self> {
        if classes == 0 {
            return Err(Error::invalid("a confusion matrix needs at least 1 class, got 0"));
        }
        if labels.len() != predictions.len() {
            return Err(Error::invalid(format!(
                "confusion matrix: {} labels but {} predictions; pass one prediction per label",
                labels.len(),
                predictions.len()
            )));
        }
        let mut counts = vec![0u64; classes * classes];
        for (i, (&label, &predicted)) in labels.iter().zip(predictions).enumerate() {
            let (label, predicted) = (usize::from(label), predicted as usize);
            if label >= classes {
                return Err(Error::invalid(format!(
                    "confusion matrix: label {label} at position {i} is not a class (expected 0..{classes})"
                )));
            }
            if predicted >= classes {
                return Err(Error::invalid(format!(
                    "confusion matrix: prediction {predicted} at position {i} is not a class (expected 0..{classes})"
                )));
            }
            counts[label * classes + predicted] += 1;
        }
        Ok(ConfusionMatrix { classes, counts })
    }

    /// How many samples of `true_class` were predicted as `predicted`. Panics if either is
    /// `>= classes`.
    pub fn get(&self, true_class: usize, predicted: usize) -> u64 {
        assert!(
            true_class < self.classes && predicted < self.classes,
            "confusion matrix index ({true_class}, {predicted}) outside {0}×{0}",
            self.classes
        );
        self.counts[true_class * self.classes + predicted]
    }

    /// Number of samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples of class `c` (row sum): sklearn's "support".
    pub fn support(&self, c: usize) -> u64 {
        (0..self.classes).map(|p| self.get(c, p)).sum()
    }

    /// Samples predicted as class `c` (column sum).
    pub fn predicted(&self, c: usize) -> u64 {
        (0..self.classes).map(|t| self.get(t, c)).sum()
    }

    /// Fraction on the diagonal; 0.0 for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.get(c, c)).sum();
        ratio(correct, self.total())
    }

    /// Text table for the terminal: one row per true class, one column per predicted class,
    /// class names as headers, counts right-aligned. A class without a name in `names` is
    /// shown by its index.
    pub fn render(&self, names: &[String]) -> String {
        let names = display_names(self.classes, names);
        let corner = "true \\ predicted";
        let first = names.iter().map(|n| n.chars().count()).chain([corner.chars().count()]).max().unwrap_or(0);
        let widest_count = self.counts.iter().map(|c| c.to_string().len()).max().unwrap_or(1);
        let column = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max(widest_count);
        let mut out = format!("{corner:>first$}");
        for name in &names {
            out += &format!("  {name:>column$}");
        }
        out.push('\n');
        for (t, name) in names.iter().enumerate() {
            out += &format!("{name:>first$}");
            for p in 0..self.classes {
                out += &format!("  {:>column$}", self.get(t, p));
            }
            out.push('\n');
        }
        out
    }
}

/// Precision, recall, F1 and support of one class (or an average of them).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// What `sklearn.metrics.classification_report` shows, as numbers.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClassificationReport {
    pub names: Vec<String>,
    pub per_class: Vec<ClassScores>,
    pub accuracy: f64,
    pub macro_avg: ClassScores,
    pub weighted_avg: ClassScores,
    pub total: u64,
}

impl ClassificationReport {
    /// Scores of every class of `m` (all of them, also classes that neither occur nor are
    /// predicted: sklearn's `labels=range(classes)`). A class without a name in `names` is named
    /// by its index.
    pub fn from_confusion(m: &ConfusionMatrix, names: &[String]) -> Self {
        let per_class: Vec<ClassScores> = (0..m.classes)
            .map(|c| {
                let tp = m.get(c, c);
                let (support, predicted) = (m.support(c), m.predicted(c));
                ClassScores {
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    // 2·TP / (2·TP + FP + FN), and 2·TP + FP + FN = support + predicted.
                    f1: ratio(2 * tp, support + predicted),
                    support,
                }
            })
            .collect();
        let total = m.total();
        let classes = m.classes as f64;
        let mean = |f: fn(&ClassScores) -> f64| per_class.iter().map(f).sum::<f64>() / classes;
        // sklearn gives 0 (zero_division) for a weighted average whose weights sum to 0.
        let weighted = |f: fn(&ClassScores) -> f64| {
            if total == 0 {
                0.0
            } else {
                per_class.iter().map(|s| f(s) * s.support as f64).sum::<f64>() / total as f64
            }
        };
        let macro_avg = ClassScores {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support: total,
        };
        let weighted_avg = ClassScores {
            precision: weighted(|s| s.precision),
            recall: weighted(|s| s.recall),
            f1: weighted(|s| s.f1),
            support: total,
        };
        ClassificationReport {
            names: display_names(m.classes, names),
            per_class,
            accuracy: m.accuracy(),
            macro_avg,
            weighted_avg,
            total,
        }
    }

    /// The text of `sklearn.metrics.classification_report(y_true, y_pred, labels=range(classes),
    /// target_names=names, digits=digits)`, character for character — the same as without
    /// `labels` whenever every class occurs in `y_true` or `y_pred`.
    ///
    /// sklearn's format strings, reproduced below:
    /// ```text
    /// width    = max(longest name, len("weighted avg"), digits)
    /// header   = "{:>{width}s} " + " {:>9}" * 4                     then "\n\n"
    /// row      = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"  then "\n" after the classes
    /// accuracy = "{:>{width}s} " + " {:>9}" * 2 (empty) + " {:>9.{digits}f}" + " {:>9}\n"
    /// ```
    /// followed by the `macro avg` and `weighted avg` rows. The text ends with one `\n`.
    pub fn render(&self, digits: usize) -> String {
        let name_width = self.names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let width = name_width.max("weighted avg".len()).max(digits);
        let mut report = format!("{:>width$} ", "");
        for header in ["precision", "recall", "f1-score", "support"] {
            report += &format!(" {header:>9}");
        }
        report += "\n\n";
        let row = |name: &str, s: &ClassScores| {
            format!(
                "{name:>width$}  {:>9.digits$} {:>9.digits$} {:>9.digits$} {:>9}\n",
                s.precision, s.recall, s.f1, s.support
            )
        };
        for (name, scores) in self.names.iter().zip(&self.per_class) {
            report += &row(name, scores);
        }
        report += "\n";
        report +=
            &format!("{:>width$}  {:>9} {:>9} {:>9.digits$} {:>9}\n", "accuracy", "", "", self.accuracy, self.total);
        report += &row("macro avg", &self.macro_avg);
        report += &row("weighted avg", &self.weighted_avg);
        report
    }
}

/// Most-common-label baseline: the label that occurs most often in `train_labels` (the smallest
/// such label on a tie, as [`crate::data::Dataset::majority_baseline`]), and the accuracy of
/// always predicting it, measured on `labels`. Returns `(0, 0.0)` when `train_labels` is empty,
/// and an accuracy of 0.0 when `labels` is.
pub fn baseline_accuracy(train_labels: &[u8], labels: &[u8]) -> (u8, f64) {
    if train_labels.is_empty() {
        return (0, 0.0);
    }
    let mut counts = [0u64; 256];
    for &label in train_labels {
        counts[usize::from(label)] += 1;
    }
    // `max_by_key` keeps the last maximum, so scan in reverse to keep the smallest label.
    let (label, _) = counts.iter().enumerate().rev().max_by_key(|&(_, count)| *count).expect("256 counts");
    let label = label as u8;
    let hits = labels.iter().filter(|&&l| l == label).count() as u64;
    (label, ratio(hits, labels.len() as u64))
}

/// `numerator / denominator`, and 0.0 for 0/0 (sklearn's `zero_division="warn"` value).
fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// `names`, padded with class indices up to `classes` entries (and cut to `classes`).
fn display_names(classes: usize, names: &[String]) -> Vec<String> {
    (0..classes).map(|c| names.get(c).cloned().unwrap_or_else(|| c.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_of_zero_by_zero_is_zero() {
        assert_eq!(ratio(0, 0), 0.0);
        assert_eq!(ratio(1, 4), 0.25);
    }

    #[test]
    fn missing_names_are_replaced_by_class_indices() {
        assert_eq!(display_names(3, &["a".to_string()]), ["a", "1", "2"]);
        assert_eq!(display_names(1, &["a".to_string(), "b".to_string()]), ["a"]);
    }
}
