//! Known answers for the evaluation metrics: counts worked out by hand, and report texts produced
//! by scikit-learn 1.9.1 (`sklearn.metrics.classification_report`), pasted verbatim.

use wgpu_cnn::metrics::{baseline_accuracy, ClassScores, ClassificationReport, ConfusionMatrix};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The 3-class example used throughout:
/// ```python
/// y_true = [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]
/// y_pred = [0, 0, 0, 1, 2, 1, 1, 0, 2, 1]
/// ```
fn three_classes() -> ConfusionMatrix {
    ConfusionMatrix::new(3, &[0, 0, 0, 0, 0, 1, 1, 1, 2, 2], &[0, 0, 0, 1, 2, 1, 1, 0, 2, 1]).unwrap()
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!((actual - expected).abs() < 1e-12, "{what}: got {actual}, expected {expected}");
}

fn assert_scores(actual: &ClassScores, expected: [f64; 3], support: u64, what: &str) {
    assert_close(actual.precision, expected[0], &format!("{what} precision"));
    assert_close(actual.recall, expected[1], &format!("{what} recall"));
    assert_close(actual.f1, expected[2], &format!("{what} f1"));
    assert_eq!(actual.support, support, "{what} support");
}

#[test]
fn confusion_matrix_counts_true_rows_against_predicted_columns() {
    let m = three_classes();
    // sklearn.metrics.confusion_matrix(y_true, y_pred) == [[3, 1, 1], [1, 2, 0], [0, 1, 1]]
    assert_eq!(m.counts, [3, 1, 1, 1, 2, 0, 0, 1, 1]);
    assert_eq!(m.get(0, 2), 1);
    assert_eq!(m.get(1, 0), 1);
    assert_eq!(m.get(1, 2), 0);
    assert_eq!(m.total(), 10);
    assert_eq!((m.support(0), m.support(1), m.support(2)), (5, 3, 2));
    assert_eq!((m.predicted(0), m.predicted(1), m.predicted(2)), (4, 4, 2));
    assert_close(m.accuracy(), 0.6, "accuracy");
}

#[test]
fn per_class_scores_and_averages_match_the_hand_computation() {
    // Per class, from the matrix [[3, 1, 1], [1, 2, 0], [0, 1, 1]]:
    //   class 0: TP 3, FP 1 (column 0 minus TP), FN 2 (row 0 minus TP), support 5
    //            P = 3/4, R = 3/5, F1 = 2·3 / (2·3 + 1 + 2) = 6/9
    //   class 1: TP 2, FP 2, FN 1, support 3
    //            P = 2/4, R = 2/3, F1 = 4 / (4 + 2 + 1) = 4/7
    //   class 2: TP 1, FP 1, FN 1, support 2
    //            P = 1/2, R = 1/2, F1 = 2 / (2 + 1 + 1) = 1/2
    // accuracy = (3 + 2 + 1) / 10
    // macro    = plain means:      P (3/4 + 1/2 + 1/2) / 3, R (3/5 + 2/3 + 1/2) / 3, F1 (6/9 + 4/7 + 1/2) / 3
    // weighted = support-weighted: P (5·3/4 + 3·1/2 + 2·1/2) / 10 = 0.625, R 6/10, F1 (5·6/9 + 3·4/7 + 2·1/2) / 10
    let report = ClassificationReport::from_confusion(&three_classes(), &names(&["cat", "dog", "bird"]));
    assert_eq!(report.names, ["cat", "dog", "bird"]);
    assert_scores(&report.per_class[0], [0.75, 0.6, 6.0 / 9.0], 5, "class 0");
    assert_scores(&report.per_class[1], [0.5, 2.0 / 3.0, 4.0 / 7.0], 3, "class 1");
    assert_scores(&report.per_class[2], [0.5, 0.5, 0.5], 2, "class 2");
    assert_close(report.accuracy, 0.6, "accuracy");
    assert_eq!(report.total, 10);
    let macro_f1 = (6.0 / 9.0 + 4.0 / 7.0 + 0.5) / 3.0;
    assert_scores(&report.macro_avg, [1.75 / 3.0, (0.6 + 2.0 / 3.0 + 0.5) / 3.0, macro_f1], 10, "macro avg");
    let weighted_f1 = (5.0 * 6.0 / 9.0 + 3.0 * 4.0 / 7.0 + 2.0 * 0.5) / 10.0;
    assert_scores(&report.weighted_avg, [0.625, 0.6, weighted_f1], 10, "weighted avg");
    // The values sklearn's output_dict=True gives for the same input.
    assert_close(report.macro_avg.recall, 0.5888888888888889, "sklearn macro recall");
    assert_close(report.macro_avg.f1, 0.5793650793650794, "sklearn macro f1");
    assert_close(report.weighted_avg.f1, 0.6047619047619047, "sklearn weighted f1");
}

#[test]
fn zero_divisions_give_zero_like_sklearn_default() {
    // y_true = [0, 0, 1, 1, 2], y_pred = [0, 1, 1, 3, 0]
    //   class 2 is never predicted: precision 0/0 → 0, recall 0/1, F1 0 / (0 + 0 + 1) = 0
    //   class 3 has support 0 but is predicted once: precision 0/1, recall 0/0 → 0, F1 0
    let m = ConfusionMatrix::new(4, &[0, 0, 1, 1, 2], &[0, 1, 1, 3, 0]).unwrap();
    let report = ClassificationReport::from_confusion(&m, &names(&["a", "b", "never predicted", "no support"]));
    assert_scores(&report.per_class[0], [0.5, 0.5, 0.5], 2, "class 0");
    assert_scores(&report.per_class[1], [0.5, 0.5, 0.5], 2, "class 1");
    assert_scores(&report.per_class[2], [0.0, 0.0, 0.0], 1, "never predicted");
    assert_scores(&report.per_class[3], [0.0, 0.0, 0.0], 0, "no support");
    assert_scores(&report.macro_avg, [0.25, 0.25, 0.25], 5, "macro avg");
    assert_scores(&report.weighted_avg, [0.4, 0.4, 0.4], 5, "weighted avg");
    assert!(report.per_class.iter().all(|s| s.precision.is_finite() && s.recall.is_finite() && s.f1.is_finite()));
}

#[test]
fn an_empty_matrix_has_zero_scores_not_nan() {
    let m = ConfusionMatrix::new(2, &[], &[]).unwrap();
    assert_eq!(m.total(), 0);
    assert_eq!(m.accuracy(), 0.0);
    let report = ClassificationReport::from_confusion(&m, &names(&["a", "b"]));
    assert_scores(&report.weighted_avg, [0.0, 0.0, 0.0], 0, "weighted avg");
    assert_scores(&report.macro_avg, [0.0, 0.0, 0.0], 0, "macro avg");
}

#[test]
fn report_text_is_sklearns_for_two_digits() {
    // classification_report([0,0,0,0,0,1,1,1,2,2], [0,0,0,1,2,1,1,0,2,1],
    //                       target_names=["cat", "dog", "bird"], digits=2)
    // Note weighted precision 0.625 prints as 0.62: Python and Rust both round the exact binary
    // value half-to-even.
    let expected = "              precision    recall  f1-score   support\n\n         cat       0.75      0.60      0.67         5\n         dog       0.50      0.67      0.57         3\n        bird       0.50      0.50      0.50         2\n\n    accuracy                           0.60        10\n   macro avg       0.58      0.59      0.58        10\nweighted avg       0.62      0.60      0.60        10\n";
    let report = ClassificationReport::from_confusion(&three_classes(), &names(&["cat", "dog", "bird"]));
    assert_eq!(report.render(2), expected, "\ngot:\n{}\nexpected:\n{expected}", report.render(2));
}

#[test]
fn report_text_widens_for_long_names_and_more_digits() {
    // Same labels, target_names=["airplane", "an automobile!", "b"], digits=4: the name column
    // grows to the 14-character name.
    let expected = "                precision    recall  f1-score   support\n\n      airplane     0.7500    0.6000    0.6667         5\nan automobile!     0.5000    0.6667    0.5714         3\n             b     0.5000    0.5000    0.5000         2\n\n      accuracy                         0.6000        10\n     macro avg     0.5833    0.5889    0.5794        10\n  weighted avg     0.6250    0.6000    0.6048        10\n";
    let report = ClassificationReport::from_confusion(&three_classes(), &names(&["airplane", "an automobile!", "b"]));
    assert_eq!(report.render(4), expected, "\ngot:\n{}\nexpected:\n{expected}", report.render(4));
}

#[test]
fn report_text_shows_zero_division_rows_as_zeros() {
    // classification_report([0,0,1,1,2], [0,1,1,3,0],
    //     target_names=["a", "b", "never predicted", "no support"], digits=2)
    let expected = "                 precision    recall  f1-score   support\n\n              a       0.50      0.50      0.50         2\n              b       0.50      0.50      0.50         2\nnever predicted       0.00      0.00      0.00         1\n     no support       0.00      0.00      0.00         0\n\n       accuracy                           0.40         5\n      macro avg       0.25      0.25      0.25         5\n   weighted avg       0.40      0.40      0.40         5\n";
    let m = ConfusionMatrix::new(4, &[0, 0, 1, 1, 2], &[0, 1, 1, 3, 0]).unwrap();
    let report = ClassificationReport::from_confusion(&m, &names(&["a", "b", "never predicted", "no support"]));
    assert_eq!(report.render(2), expected, "\ngot:\n{}\nexpected:\n{expected}", report.render(2));
}

#[test]
fn report_text_keeps_a_class_that_never_occurs_like_sklearn_with_labels() {
    // classification_report([0,0,1,1,2], [0,1,1,3,0], labels=[0,1,2,3,4],
    //     target_names=["a", "b", "c", "d", "absent"], digits=3)
    // Class 4 is in neither list; it still counts in the macro average (0.200, not 0.250).
    let expected = "              precision    recall  f1-score   support\n\n           a      0.500     0.500     0.500         2\n           b      0.500     0.500     0.500         2\n           c      0.000     0.000     0.000         1\n           d      0.000     0.000     0.000         0\n      absent      0.000     0.000     0.000         0\n\n    accuracy                          0.400         5\n   macro avg      0.200     0.200     0.200         5\nweighted avg      0.400     0.400     0.400         5\n";
    let m = ConfusionMatrix::new(5, &[0, 0, 1, 1, 2], &[0, 1, 1, 3, 0]).unwrap();
    let report = ClassificationReport::from_confusion(&m, &names(&["a", "b", "c", "d", "absent"]));
    assert_eq!(report.render(3), expected, "\ngot:\n{}\nexpected:\n{expected}", report.render(3));
}

#[test]
fn confusion_table_has_names_as_headers_and_right_aligned_counts() {
    let m = ConfusionMatrix::new(2, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        .unwrap();
    let expected =
        "true \\ predicted  airplane      ship\n        airplane        11         1\n            ship         1         0\n";
    // Every count column is as wide as the longest class name (8), so the grid lines up; the
    // first column fits "true \ predicted" (16).
    let text = m.render(&names(&["airplane", "ship"]));
    assert_eq!(text, expected, "\ngot:\n{text}\nexpected:\n{expected}");
}

#[test]
fn confusion_table_names_unnamed_classes_by_index() {
    let m = ConfusionMatrix::new(3, &[2], &[1]).unwrap();
    let text = m.render(&names(&["only"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].ends_with("only     1     2"), "{text}");
    assert!(lines[3].trim_start().starts_with("2     0     1     0"), "{text}");
}

#[test]
fn baseline_predicts_the_most_common_training_label() {
    // Training: label 3 three times, 1 twice, 7 once → always predict 3.
    // Evaluation: 3 occurs 2 times in 5 → 0.4.
    let (label, accuracy) = baseline_accuracy(&[1, 3, 7, 3, 1, 3], &[3, 0, 3, 9, 1]);
    assert_eq!(label, 3);
    assert_close(accuracy, 0.4, "baseline accuracy");
}

#[test]
fn baseline_breaks_ties_by_the_smallest_label() {
    // 5 and 2 both occur twice; 2 wins. It is measured on the evaluation labels, not the training ones.
    let (label, accuracy) = baseline_accuracy(&[5, 2, 5, 2], &[2, 2, 2, 5]);
    assert_eq!(label, 2);
    assert_close(accuracy, 0.75, "baseline accuracy");
}

#[test]
fn baseline_of_empty_lists_is_zero() {
    assert_eq!(baseline_accuracy(&[], &[1, 2]), (0, 0.0));
    assert_eq!(baseline_accuracy(&[4, 4], &[]), (4, 0.0));
}

#[test]
fn mismatched_lengths_are_an_error_naming_both_lengths() {
    let message = ConfusionMatrix::new(3, &[0, 1, 2], &[0, 1]).unwrap_err().to_string();
    assert!(message.contains("3 labels") && message.contains("2 predictions"), "{message}");
}

#[test]
fn out_of_range_labels_and_predictions_are_errors_naming_the_value() {
    let message = ConfusionMatrix::new(3, &[0, 3], &[0, 0]).unwrap_err().to_string();
    assert!(message.contains("label 3 at position 1"), "{message}");
    let message = ConfusionMatrix::new(3, &[0, 1], &[0, 10]).unwrap_err().to_string();
    assert!(message.contains("prediction 10 at position 1"), "{message}");
    assert!(ConfusionMatrix::new(0, &[], &[]).is_err());
}

#[test]
#[should_panic(expected = "outside 3×3")]
fn get_outside_the_matrix_panics() {
    three_classes().get(3, 0);
}
