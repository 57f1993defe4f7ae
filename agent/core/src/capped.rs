//! The first items of a list and a count of the rest: what hostile input can make millions of
//! (problems, grants, entries) costs bounded memory, and the report still says how many it does
//! not list.

/// At most `CAP` items kept, in the order pushed; the rest counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped<T, const CAP: usize> {
    items: Vec<T>,
    left_out: u64,
}

impl<T, const CAP: usize> Default for Capped<T, CAP> {
    fn default() -> Self {
        Self { items: Vec::new(), left_out: 0 }
    }
}

impl<T, const CAP: usize> Capped<T, CAP> {
    /// Keeps `item` if fewer than `CAP` are kept, else counts it.
    pub fn push(&mut self, item: T) {
        if self.items.len() < CAP {
            self.items.push(item);
        } else {
            self.left_out += 1;
        }
    }

    /// How many were pushed past the cap.
    pub fn left_out(&self) -> u64 {
        self.left_out
    }

    /// Appends `summary(n)` when `n` items were left out, past the cap on purpose: the count of
    /// what is not listed is the list's last item. The count is then spent (a second call adds
    /// nothing).
    pub fn close_with(&mut self, summary: impl FnOnce(u64) -> T) {
        if self.left_out > 0 {
            self.items.push(summary(self.left_out));
            self.left_out = 0;
        }
    }

    /// The items kept.
    pub fn into_vec(self) -> Vec<T> {
        self.items
    }
}

impl<T, const CAP: usize> std::ops::Deref for Capped<T, CAP> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_are_kept_the_rest_counted_and_the_count_closes_the_list_once() {
        let mut c: Capped<u32, 3> = Capped::default();
        for i in 0..10 {
            c.push(i);
        }
        assert_eq!((&*c, c.left_out()), (&[0, 1, 2][..], 7));
        c.close_with(|n| 1000 + u32::try_from(n).unwrap_or(0));
        c.close_with(|_| 9999);
        assert_eq!(c.into_vec(), [0, 1, 2, 1007]);
        let mut under: Capped<u32, 3> = Capped::default();
        under.push(1);
        under.close_with(|_| 9999);
        assert_eq!(under.into_vec(), [1]);
    }
}
