//! Bounded top-k selection: a binary min-heap whose root is the *worst* kept candidate.
//!
//! Order: a higher score is better; equal scores are broken by the lower index. With that total
//! order, merging the top-k of disjoint reference ranges gives exactly the top-k of their union.

/// One candidate neighbour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Cosine similarity.
    pub score: f32,
    /// Row of the reference.
    pub index: u64,
}

impl Hit {
    /// True when `self` ranks strictly before `other` (higher score, then lower index).
    #[inline]
    pub fn better_than(&self, other: &Hit) -> bool {
        self.score > other.score || (self.score == other.score && self.index < other.index)
    }
}

/// The best `k` hits seen so far.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: Vec<Hit>,
}

impl TopK {
    /// An empty selection keeping at most `k` hits.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: Vec::with_capacity(k),
        }
    }

    /// Scores strictly above this may enter (when the selection is full, the worst kept score;
    /// `-inf` before that). A score equal to it enters only with a lower index than the worst.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap[0].score
        }
    }

    /// Offers a hit; keeps it when it ranks among the best `k`.
    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(hit);
            self.sift_up(self.heap.len() - 1);
        } else if hit.better_than(&self.heap[0]) {
            self.heap[0] = hit;
            self.sift_down(0);
        }
    }

    /// Offers every hit of `other`.
    pub fn merge(&mut self, other: &TopK) {
        for &hit in &other.heap {
            self.push(hit);
        }
    }

    /// The kept hits, best first.
    pub fn into_sorted(mut self) -> Vec<Hit> {
        self.heap
            .sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        self.heap
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            // The root holds the worst: a child worse than its parent moves up.
            if self.heap[parent].better_than(&self.heap[i]) {
                self.heap.swap(parent, i);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let mut worst = left;
            if right < n && self.heap[worst].better_than(&self.heap[right]) {
                worst = right;
            }
            if self.heap[i].better_than(&self.heap[worst]) {
                self.heap.swap(i, worst);
                i = worst;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_with_ties_to_the_lower_index() {
        let scores = [0.5, 0.9, 0.5, 0.1, 0.9, 0.5, 0.7];
        let mut top = TopK::new(4);
        for (i, &s) in scores.iter().enumerate().rev() {
            top.push(Hit {
                score: s,
                index: i as u64,
            });
        }
        let got: Vec<u64> = top.into_sorted().iter().map(|h| h.index).collect();
        assert_eq!(got, vec![1, 4, 6, 0]);
    }

    #[test]
    fn merge_of_halves_equals_whole() {
        let scores: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32).collect();
        let mut whole = TopK::new(9);
        let mut a = TopK::new(9);
        let mut b = TopK::new(9);
        for (i, &s) in scores.iter().enumerate() {
            let hit = Hit {
                score: s,
                index: i as u64,
            };
            whole.push(hit);
            if i % 3 == 0 {
                a.push(hit)
            } else {
                b.push(hit)
            }
        }
        b.merge(&a);
        assert_eq!(whole.into_sorted(), b.into_sorted());
    }
}
