fn main() {
    println!("flotilla: under construction");
}
