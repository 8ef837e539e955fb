-- Counts a generated database back (sql/generate.sql): the figures its
-- header quotes, one row.  For the header, tests (tests/it/generate.rs) and
-- anyone checking what a benchmark ran on: `psql -x -f sql/bench/mix.sql`.
--
-- Shapes are classified from the JSON as stored, so garbage that happens to
-- look like a shape counts as that shape: an object with an object value is
-- shape 2, else with a string value shape 1; an array with an object element
-- is shape 4, else with a string element shape 3; a string holding a JSON
-- object or array is shape 5 (its content is counted like that of shapes
-- 1-4); anything else non-null (empty containers, scalars, containers of
-- neither strings nor objects) is garbage.
--
-- A value is an object entry or array element of shapes 1-5; its URL text is
-- the string itself or an entry's url/href/link/value field.  Two values of
-- a profile are duplicates when their URL texts are equal once lowercased,
-- trimmed and stripped of scheme, "www.", default port, trailing slash,
-- query and fragment: a rough cut of relink's comparison key (SPEC §5), so
-- a figure to read, not to check relink against.
WITH p AS (
    SELECT
        "socialLinks" AS j,
        CASE WHEN jsonb_typeof("socialLinks") = 'string'
                  AND "socialLinks" #>> '{}' ~ '^\s*[\[{].*[\]}]\s*$'
             THEN ("socialLinks" #>> '{}')::jsonb END AS decoded,
        id
    FROM profiles
), c AS (
    SELECT
        id,
        coalesce(decoded, j) AS v,
        CASE
            WHEN j IS NULL THEN 0
            WHEN decoded IS NOT NULL THEN 5
            WHEN jsonb_typeof(j) = 'object' THEN
                CASE WHEN EXISTS (SELECT FROM jsonb_each(j) AS e
                                  WHERE jsonb_typeof(e.value) = 'object') THEN 2
                     WHEN EXISTS (SELECT FROM jsonb_each(j) AS e
                                  WHERE jsonb_typeof(e.value) = 'string') THEN 1
                     ELSE 6 END
            WHEN jsonb_typeof(j) = 'array' THEN
                CASE WHEN EXISTS (SELECT FROM jsonb_array_elements(j) AS e
                                  WHERE jsonb_typeof(e) = 'object') THEN 4
                     WHEN EXISTS (SELECT FROM jsonb_array_elements(j) AS e
                                  WHERE jsonb_typeof(e) = 'string') THEN 3
                     ELSE 6 END
            ELSE 6
        END AS shape
    FROM p
), per AS (
    -- One row per profile of shapes 1-5: its values, entry objects and
    -- duplicates.
    SELECT
        c.id,
        count(*) AS n,
        count(*) FILTER (WHERE jsonb_typeof(x.val) = 'object') AS entries,
        count(x.url) - count(DISTINCT regexp_replace(regexp_replace(regexp_replace(
            lower(btrim(x.url)), '^(https?:)?//', ''), '^www\.', ''),
            '(:(443|80))?/?([?#].*)?$', '')) AS dups
    FROM c
    CROSS JOIN LATERAL (
        SELECT val,
               CASE jsonb_typeof(val)
                   WHEN 'string' THEN val #>> '{}'
                   WHEN 'object' THEN coalesce(val ->> 'url', val ->> 'href', val ->> 'link',
                                               val ->> 'URL', val ->> 'Url', val ->> 'value')
               END AS url
        FROM (
            SELECT e.value AS val
            FROM jsonb_each(CASE WHEN jsonb_typeof(c.v) = 'object' THEN c.v END) AS e
            UNION ALL
            SELECT e
            FROM jsonb_array_elements(CASE WHEN jsonb_typeof(c.v) = 'array' THEN c.v END) AS e
        ) AS vals
    ) AS x
    WHERE c.shape BETWEEN 1 AND 5
    GROUP BY c.id
), shapes AS (
    SELECT
        count(*) AS profiles,
        count(*) FILTER (WHERE shape > 0) AS non_null,
        count(*) FILTER (WHERE shape = 1) AS shape_1,
        count(*) FILTER (WHERE shape = 2) AS shape_2,
        count(*) FILTER (WHERE shape = 3) AS shape_3,
        count(*) FILTER (WHERE shape = 4) AS shape_4,
        count(*) FILTER (WHERE shape = 5) AS shape_5,
        count(*) FILTER (WHERE shape = 6) AS garbage
    FROM c
)
SELECT
    s.profiles,
    round(100.0 * (s.profiles - s.non_null) / s.profiles, 1) AS null_pct,
    -- Shapes, in % of the non-null profiles.
    round(100.0 * s.shape_1 / s.non_null, 1) AS shape_1_pct,
    round(100.0 * s.shape_2 / s.non_null, 1) AS shape_2_pct,
    round(100.0 * s.shape_3 / s.non_null, 1) AS shape_3_pct,
    round(100.0 * s.shape_4 / s.non_null, 1) AS shape_4_pct,
    round(100.0 * s.shape_5 / s.non_null, 1) AS shape_5_pct,
    round(100.0 * s.garbage / s.non_null, 1) AS garbage_pct,
    v.values,
    round(v.values::numeric / s.profiles, 2) AS values_per_profile,
    round(v.values::numeric / s.non_null, 2) AS values_per_non_null,
    round(v.values::numeric / greatest(v.with_values, 1), 2) AS values_per_profile_with_values,
    round(100.0 * v.entries / greatest(v.values, 1), 1) AS entry_values_pct,
    v.heavy AS heavy_profiles,
    v.heavy_values,
    v.heavy_min,
    v.heavy_max,
    v.with_dups AS profiles_with_duplicates,
    round(100.0 * v.with_dups / s.profiles, 1) AS profiles_with_duplicates_pct,
    round(100.0 * v.dups / greatest(v.values, 1), 1) AS duplicate_values_pct,
    (SELECT count(*) FROM profile_links) AS user_links,
    (SELECT count(DISTINCT "userId") FROM profile_links) AS user_link_users
FROM shapes AS s
CROSS JOIN (
    SELECT
        count(*) AS with_values,
        coalesce(sum(n), 0) AS values,
        coalesce(sum(entries), 0) AS entries,
        count(*) FILTER (WHERE n >= 50) AS heavy,
        coalesce(sum(n) FILTER (WHERE n >= 50), 0) AS heavy_values,
        coalesce(min(n) FILTER (WHERE n >= 50), 0) AS heavy_min,
        coalesce(max(n) FILTER (WHERE n >= 50), 0) AS heavy_max,
        count(*) FILTER (WHERE dups > 0) AS with_dups,
        coalesce(sum(dups), 0) AS dups
    FROM per
) AS v;
