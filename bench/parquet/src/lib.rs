//! The archive's rows written two ways: as the Worker writes them (gzipped NDJSON, through
//! `seam_core::archive::objects`, the production code) and as Parquet with the `parquet` crate's
//! own writer (no Arrow), typed columns plus the event's JSON. The native binary times both;
//! the wasm build exports the same functions for `bench/parquet.mjs` to time in V8, as workerd
//! runs them.

use seam_core::archive::{objects, Row};

/// Rows shaped like the shop's stored events: a page view, product views, cart and order
/// events of a few hundred visitors, with the context a browser sends and the collector adds.
pub fn rows(n: usize, seed: u64) -> Vec<Row> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let received = 1_765_000_000_000_i64;
    (0..n)
        .map(|i| {
            let visitor = next() % 300;
            let anonymous = format!("{:08x}-4f1c-4a7e-9b2d-{:012x}", visitor, visitor * 7919);
            let product = next() % 200;
            let (kind, name, properties) = match next() % 10 {
                0 => ("page", Some("Home"), "{\"path\":\"/\",\"title\":\"Seam Shop\"}".to_owned()),
                1 => ("track", Some("Product Added"), format!("{{\"product_id\":\"p{product}\",\"price\":99,\"quantity\":1,\"currency\":\"EUR\"}}")),
                2 => ("track", Some("Order Completed"), format!("{{\"order_id\":\"o-{i}\",\"revenue\":{}.5,\"currency\":\"EUR\",\"products\":[{{\"product_id\":\"p{product}\",\"price\":99}}]}}", 20 + product)),
                _ => ("track", Some("Product Viewed"), format!("{{\"product_id\":\"p{product}\",\"name\":\"Trail Runner {product}\",\"category\":\"Running Shoes\",\"price\":99}}")),
            };
            let message = format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", next() as u32, i % 65536, i % 4096, visitor, next() % (1 << 48));
            let timestamp = received + (i as i64) * 350;
            let body = format!(
                "{{\"type\":\"{kind}\",\"event\":\"{}\",\"anonymousId\":\"{anonymous}\",\"messageId\":\"{message}\",\"properties\":{properties},\
                 \"context\":{{\"library\":{{\"name\":\"@seam/sdk\",\"version\":\"0.1.0\"}},\"locale\":\"en-GB\",\
                 \"page\":{{\"path\":\"/product\",\"referrer\":\"\",\"search\":\"?id=p{product}\",\"title\":\"Trail Runner · Seam Shop\",\"url\":\"https://shop.example/product?id=p{product}\"}},\
                 \"userAgent\":\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\",\
                 \"consent\":{{\"categoryPreferences\":{{\"analytics_storage\":true,\"ad_storage\":false}}}},\
                 \"seam\":{{\"identity\":\"cookie\"}}}},\"timestamp\":\"2025-12-06T10:00:00.000Z\",\"receivedAt\":\"2025-12-06T10:00:00.350Z\"}}",
                name.unwrap_or_default()
            );
            Row {
                source_id: "web".into(),
                message_id: message,
                kind: kind.into(),
                name: name.map(str::to_owned),
                anonymous_id: Some(anonymous),
                user_id: (next() % 10 == 0).then(|| format!("user-{visitor}")),
                timestamp,
                received_at: timestamp + 350,
                body,
            }
        })
        .collect()
}

/// Bytes of the gzipped NDJSON object the Worker writes for `rows`.
pub fn ndjson(rows: &[Row]) -> usize {
    objects("0000000000000000", rows)
        .iter()
        .map(|o| o.body.len())
        .sum()
}

#[cfg(feature = "parquet")]
pub mod columnar {
    use std::sync::Arc;

    use parquet::basic::{Compression, GzipLevel};
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use seam_core::archive::Row;

    const SCHEMA: &str = "message event {
        REQUIRED BYTE_ARRAY source_id (UTF8);
        REQUIRED BYTE_ARRAY message_id (UTF8);
        REQUIRED BYTE_ARRAY type (UTF8);
        OPTIONAL BYTE_ARRAY event (UTF8);
        OPTIONAL BYTE_ARRAY anonymous_id (UTF8);
        OPTIONAL BYTE_ARRAY user_id (UTF8);
        REQUIRED INT64 timestamp (TIMESTAMP(MILLIS,true));
        REQUIRED INT64 received_at (TIMESTAMP(MILLIS,true));
        REQUIRED BYTE_ARRAY body (JSON);
    }";

    /// Which codec: 0 none, 1 Snappy, 2 gzip (level 6, as the NDJSON).
    pub fn codec(code: u32) -> Compression {
        match code {
            1 => Compression::SNAPPY,
            2 => Compression::GZIP(GzipLevel::default()),
            _ => Compression::UNCOMPRESSED,
        }
    }

    /// A Parquet file of `rows` in one row group; its bytes.
    pub fn write(rows: &[Row], compression: Compression) -> parquet::errors::Result<Vec<u8>> {
        let schema = Arc::new(parse_message_type(SCHEMA)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(compression)
                .build(),
        );
        let mut writer = SerializedFileWriter::new(Vec::new(), schema, props)?;
        let mut group = writer.next_row_group()?;
        let text = |f: &dyn Fn(&Row) -> &str| -> Vec<ByteArray> {
            rows.iter().map(|r| ByteArray::from(f(r))).collect()
        };
        let optional = |f: &dyn Fn(&Row) -> Option<&str>| -> (Vec<ByteArray>, Vec<i16>) {
            let levels = rows.iter().map(|r| i16::from(f(r).is_some())).collect();
            (
                rows.iter()
                    .filter_map(|r| f(r).map(ByteArray::from))
                    .collect(),
                levels,
            )
        };
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            match index {
                0 => {
                    column.typed::<ByteArrayType>().write_batch(
                        &text(&|r| &r.source_id),
                        None,
                        None,
                    )?;
                }
                1 => {
                    column.typed::<ByteArrayType>().write_batch(
                        &text(&|r| &r.message_id),
                        None,
                        None,
                    )?;
                }
                2 => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&text(&|r| &r.kind), None, None)?;
                }
                3..=5 => {
                    let (values, levels) = match index {
                        3 => optional(&|r| r.name.as_deref()),
                        4 => optional(&|r| r.anonymous_id.as_deref()),
                        _ => optional(&|r| r.user_id.as_deref()),
                    };
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&levels), None)?;
                }
                6 | 7 => {
                    let values: Vec<i64> = rows
                        .iter()
                        .map(|r| {
                            if index == 6 {
                                r.timestamp
                            } else {
                                r.received_at
                            }
                        })
                        .collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&values, None, None)?;
                }
                _ => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&text(&|r| &r.body), None, None)?;
                }
            }
            column.close()?;
            index += 1;
        }
        group.close()?;
        writer.into_inner()
    }
}

/// For the wasm build: encodes `rounds` claims of `n` rows the given way (0 NDJSON, 1 + codec
/// for Parquet) and returns the bytes written, so V8 runs exactly what the native binary times.
#[no_mangle]
pub extern "C" fn encode(way: u32, n: u32, rounds: u32) -> u64 {
    let rows = rows(n as usize, 7);
    let mut total = 0u64;
    for _ in 0..rounds {
        total += match way {
            0 => ndjson(&rows) as u64,
            #[cfg(feature = "parquet")]
            w => columnar::write(&rows, columnar::codec(w - 1)).map_or(0, |b| b.len() as u64),
            #[cfg(not(feature = "parquet"))]
            _ => 0,
        };
    }
    total
}
