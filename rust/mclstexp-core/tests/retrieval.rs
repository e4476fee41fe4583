//! Property tests of exact top-k cosine retrieval against a float64 brute-force oracle.

use mclstexp_core::retrieval::{topk_cosine, ExactIndex, Neighbours};
use mclstexp_core::simd::{self, Isa};
use mclstexp_core::view::Matrix;
use mclstexp_core::Error;
use proptest::prelude::*;

/// `data` as a matrix of `dim` columns (as many rows as fit).
fn mat<'a>(arg: &'static str, data: &'a [f32], dim: usize) -> Result<Matrix<'a>, Error> {
    Matrix::new(arg, data, data.len() / dim.max(1), dim)
}

/// [`topk_cosine`] on flat row-major buffers of `dim` columns.
fn topk(
    queries: &[f32],
    reference: &[f32],
    dim: usize,
    k: usize,
    n_threads: Option<usize>,
) -> Result<Neighbours, Error> {
    topk_cosine(
        mat("queries", queries, dim)?,
        mat("reference", reference, dim)?,
        k,
        n_threads,
    )
}

/// Float64 cosine of every query with every reference; zero rows score 0.
fn oracle_scores(queries: &[f32], reference: &[f32], dim: usize) -> Vec<Vec<f64>> {
    let norm = |r: &[f32]| -> Vec<f64> {
        let n: f64 = r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        r.iter()
            .map(|&x| if n > 0.0 { x as f64 / n } else { 0.0 })
            .collect()
    };
    let refs: Vec<Vec<f64>> = reference.chunks(dim).map(norm).collect();
    queries
        .chunks(dim)
        .map(|q| {
            let q = norm(q);
            refs.iter()
                .map(|r| r.iter().zip(&q).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect()
}

/// Checks `got` against the oracle: each returned score is the oracle's for that index (1e-5),
/// the i-th returned score is the oracle's i-th best, indices are distinct, well-separated ranks
/// have the oracle's index, and duplicate reference rows come out lower index first.
fn check(got: &Neighbours, queries: &[f32], reference: &[f32], dim: usize, k: usize) {
    const TOL: f64 = 1e-5;
    let all = oracle_scores(queries, reference, dim);
    let rows: Vec<&[f32]> = reference.chunks(dim).collect();
    for (qi, scores) in all.iter().enumerate() {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let idx = &got.indices[qi * k..(qi + 1) * k];
        let sc = &got.scores[qi * k..(qi + 1) * k];
        let mut seen = std::collections::HashSet::new();
        for i in 0..k {
            let j = idx[i] as usize;
            assert!(seen.insert(j), "query {qi}: index {j} returned twice");
            assert!(
                (sc[i] as f64 - scores[j]).abs() <= TOL,
                "query {qi} rank {i}: score"
            );
            assert!(
                (scores[j] - scores[order[i]]).abs() <= 2.0 * TOL,
                "query {qi} rank {i}: not the i-th best"
            );
            if i > 0 {
                assert!(sc[i - 1] >= sc[i], "query {qi}: not sorted");
            }
            let lo = if i > 0 {
                scores[order[i - 1]] - scores[order[i]]
            } else {
                f64::INFINITY
            };
            let hi = if i + 1 < order.len() {
                scores[order[i]] - scores[order[i + 1]]
            } else {
                f64::INFINITY
            };
            if lo > 2.0 * TOL && hi > 2.0 * TOL {
                assert_eq!(
                    j, order[i],
                    "query {qi} rank {i}: well-separated rank has another index"
                );
            }
        }
        // Duplicates: a returned row implies every lower-indexed identical row is returned before it.
        for i in 0..k {
            let j = idx[i] as usize;
            for lower in 0..j {
                if rows[lower] == rows[j] {
                    let pos = idx.iter().position(|&x| x as usize == lower);
                    assert!(
                        matches!(pos, Some(p) if p < i),
                        "query {qi}: duplicate {lower} of {j} not before it"
                    );
                }
            }
        }
    }
}

fn matrix(n: usize, dim: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-1.0f32..1.0, n * dim)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_data_matches_oracle(
        (_n, _q, dim, reference, queries, k) in (1usize..80, 1usize..20, 1usize..40).prop_flat_map(
            |(n, q, dim)| (Just(n), Just(q), Just(dim), matrix(n, dim), matrix(q, dim), 1..=n)
        ),
        threads in 1usize..4,
    ) {
        let got = topk(&queries, &reference, dim, k, Some(threads))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&got, &queries, &reference, dim, k);
    }

    #[test]
    fn duplicates_and_ties_go_to_the_lower_index(
        base in matrix(5, 7),
        picks in prop::collection::vec(0usize..5, 1..60),
        queries in matrix(9, 7),
        seed_k in 0usize..1000,
    ) {
        // Reference rows drawn from 5 distinct vectors (many exact duplicates), some scaled:
        // a scaled copy has the same direction, so a (near-)tie in cosine.
        let mut reference = Vec::new();
        for (i, &p) in picks.iter().enumerate() {
            let scale = if i % 3 == 0 { 1.0 } else { 1.0 + i as f32 };
            reference.extend(base[p * 7..(p + 1) * 7].iter().map(|x| x * scale));
        }
        let n = picks.len();
        let k = 1 + seed_k % n;
        let got = topk(&queries, &reference, 7, k, Some(2)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&got, &queries, &reference, 7, k);
    }

    #[test]
    fn incremental_add_equals_one_build(
        reference in matrix(70, 9),
        split in 1usize..69,
        queries in matrix(13, 9),
    ) {
        let mut inc = ExactIndex::new(9).map_err(|e| TestCaseError::fail(e.to_string()))?;
        mat("reference", &reference[..split * 9], 9).and_then(|m| inc.add(m, Some(2))).map_err(|e| TestCaseError::fail(e.to_string()))?;
        mat("reference", &reference[split * 9..], 9).and_then(|m| inc.add(m, Some(1))).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let whole = mat("reference", &reference, 9).and_then(|m| ExactIndex::from_rows(m, Some(2))).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let a = mat("queries", &queries, 9).and_then(|m| inc.search(m, 70, Some(2))).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let b = mat("queries", &queries, 9).and_then(|m| whole.search(m, 70, Some(1))).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(a, b);
    }
}

#[test]
fn large_query_and_reference_sets_use_every_code_path() {
    // Many query blocks (query-parallel) and few queries (reference-parallel), k = N, d = 1.
    let (n, dim) = (300, 1);
    let reference: Vec<f32> = (0..n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    let queries: Vec<f32> = (0..250)
        .map(|i| if i % 2 == 0 { 1.0 } else { -0.5 })
        .collect();
    for (q, k) in [(250, 5), (3, n), (1, 1)] {
        let got =
            topk(&queries[..q], &reference, dim, k, Some(2)).unwrap_or_else(|e| panic!("{e}"));
        check(&got, &queries[..q], &reference, dim, k);
    }
    let (n, dim) = (2000, 33);
    let reference: Vec<f32> = (0..n * dim)
        .map(|i| (((i * 2654435761) % 1000) as f32) / 500.0 - 1.0)
        .collect();
    let queries: Vec<f32> = (0..200 * dim)
        .map(|i| (((i * 40503) % 997) as f32) / 498.0 - 1.0)
        .collect();
    for (q, threads) in [(200, 2), (7, 3), (200, 1)] {
        let got = topk(&queries[..q * dim], &reference, dim, 50, Some(threads))
            .unwrap_or_else(|e| panic!("{e}"));
        check(&got, &queries[..q * dim], &reference, dim, 50);
    }
}

#[test]
fn zero_vectors_score_zero_not_nan() {
    let reference = [0.0, 0.0, 1.0, 0.0, -1.0, 0.0];
    let got = topk(&[0.0, 0.0], &reference, 2, 3, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.scores, vec![0.0, 0.0, 0.0]);
    assert_eq!(got.indices, vec![0, 1, 2]);
    let got = topk(&[2.0, 0.0], &reference, 2, 3, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.indices, vec![1, 0, 2]);
    assert_eq!(got.scores, vec![1.0, 0.0, -1.0]);
}

#[test]
fn bad_arguments_name_the_argument() {
    let arg = |r: Result<Neighbours, Error>| match r {
        Err(Error::InvalidArgument { arg, .. }) => arg,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let reference = [1.0, 0.0, 0.0, 1.0];
    assert_eq!(arg(topk(&[1.0, 0.0], &reference, 2, 0, None)), "k");
    assert_eq!(arg(topk(&[1.0, 0.0], &reference, 2, 3, None)), "k");
    assert_eq!(arg(topk(&[], &reference, 2, 1, None)), "queries");
    assert_eq!(
        arg(topk(&[1.0, f32::NAN], &reference, 2, 1, None)),
        "queries"
    );
    assert_eq!(
        arg(topk(&[1.0, 0.0], &[1.0, f32::INFINITY], 2, 1, None)),
        "reference"
    );
    assert_eq!(
        arg(topk(&[1.0, 0.0], &reference[..3], 2, 1, None)),
        "reference"
    );
    assert_eq!(
        arg(topk(&[1.0, 0.0], &reference, 2, 1, Some(0))),
        "n_threads"
    );
}

#[test]
fn save_load_round_trip_is_bit_exact_and_corruption_is_an_io_error() {
    let dir = std::env::temp_dir().join(format!("mclstexp-retrieval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("index.bin");
    let reference: Vec<f32> = (0..37 * 5).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
    let mut index = mat("reference", &reference[..20 * 5], 5)
        .and_then(|m| ExactIndex::from_rows(m, None))
        .unwrap_or_else(|e| panic!("{e}"));
    index
        .add(
            mat("reference", &reference[20 * 5..], 5).unwrap_or_else(|e| panic!("{e}")),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    index.save(&path).unwrap_or_else(|e| panic!("{e}"));
    let loaded = ExactIndex::load(&path, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.len(), 37);
    for i in 0..37 {
        assert_eq!(loaded.row(i), index.row(i));
    }
    let q = &reference[..10];
    assert_eq!(
        mat("queries", q, 5)
            .and_then(|m| loaded.search(m, 37, None))
            .ok(),
        mat("queries", q, 5)
            .and_then(|m| index.search(m, 37, None))
            .ok()
    );

    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        ExactIndex::load(&path, None),
        Err(Error::Io { .. })
    ));
    let mut huge = bytes.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        ExactIndex::load(&path, None),
        Err(Error::Io { .. })
    ));
    std::fs::write(&path, b"not an index").unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        ExactIndex::load(&path, None),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        ExactIndex::load(&dir.join("missing.bin"), None),
        Err(Error::Io { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_kernel_searches_exactly_and_the_fma_kernels_agree_bit_for_bit() {
    let (n, q, dim) = (500, 40, 37);
    let reference: Vec<f32> = (0..n * dim)
        .map(|i| (((i * 2654435761) % 1009) as f32) / 504.0 - 1.0)
        .collect();
    let queries: Vec<f32> = (0..q * dim)
        .map(|i| (((i * 40503) % 991) as f32) / 495.0 - 1.0)
        .collect();
    let index = mat("reference", &reference, dim)
        .and_then(|m| ExactIndex::from_rows(m, Some(2)))
        .unwrap_or_else(|e| panic!("{e}"));
    let levels: Vec<Isa> = simd::supported().collect();
    let mut results = Vec::new();
    for &isa in &levels {
        let found = index
            .clone()
            .with_kernel(isa)
            .search(
                mat("queries", &queries, dim).unwrap_or_else(|e| panic!("{e}")),
                20,
                Some(2),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        check(&found, &queries, &reference, dim, 20);
        results.push(found);
    }
    // The AVX2 and AVX-512 kernels fuse the same multiply-adds in the same order.
    if levels.len() == 3 {
        assert_eq!(results[1], results[2]);
    }
}
